# Root conftest: keeps pytest's doctest collection away from entry points that run on import.
collect_ignore_glob = ["src/cegeo/__main__.py"]

# The package is imported before any doctest module: pytest's importlib mode would otherwise
# load a module such as cegeo._validation a second time when a run starts with its doctests
# (pytest src/cegeo/_validation.py tests/...), and modules imported meanwhile would hold another
# InputError class than the CLI catches.
import cegeo  # noqa: E402, F401
