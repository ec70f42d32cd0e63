"""Packaging: pyproject.toml declares what src/ imports, optional packages load only on use."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import cegeo
from cegeo._io import tomllib  # tomli on Python 3.10

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "cegeo"
#: distribution name -> top-level import name, where they differ
IMPORT_NAMES = {"scikit-learn": "sklearn", "pillow": "PIL", "imbalanced-learn": "imblearn"}
#: installed by a declared dependency (scikit-learn) and imported behind an ImportError guard
TRANSITIVE = {"threadpoolctl"}


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _import_names(requirements: list[str]) -> set[str]:
    names = set()
    for req in requirements:
        dist = re.match(r"[A-Za-z0-9_.-]+", req).group(0).lower()
        names.add(IMPORT_NAMES.get(dist, dist.replace("-", "_")))
    return names


def _imports(tree: ast.AST):
    """(top-level module, deferred: inside a function, guarded: in a try catching ImportError)."""

    def catches_import_error(node: ast.Try) -> bool:
        names = set()
        for h in node.handlers:
            for t in h.type.elts if isinstance(h.type, ast.Tuple) else [h.type]:
                names.add(getattr(t, "id", None))
        return bool(names & {"ImportError", "ModuleNotFoundError"})

    def walk(node, deferred, guarded):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name.split(".")[0], deferred, guarded
            elif isinstance(child, ast.ImportFrom):
                if child.level == 0 and child.module:
                    yield child.module.split(".")[0], deferred, guarded
            else:
                yield from walk(
                    child,
                    deferred or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda),
                    guarded or (isinstance(child, ast.Try) and catches_import_error(child)),
                )

    yield from walk(tree, False, False)


def test_every_third_party_import_is_declared_and_optional_ones_load_on_use():
    project = _project()
    required = _import_names(project["dependencies"])
    extras = project["optional-dependencies"]
    optional = _import_names(extras["theory"] + extras["images"])
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        for module, deferred, guarded in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if module in sys.stdlib_module_names or module in ("cegeo", "__future__") or module in required:
                continue
            where = path.relative_to(ROOT)
            if module in optional:
                if not deferred:
                    problems.append(f"{where}: optional {module} imported when the module loads")
            elif module in TRANSITIVE:
                if not guarded:
                    problems.append(f"{where}: undeclared {module} imported without an ImportError guard")
            else:
                problems.append(f"{where}: {module} is not a declared dependency")
    assert not problems, "\n".join(problems)


def test_version_is_the_same_in_pyproject_and_the_package():
    assert _project()["version"] == cegeo.__version__
