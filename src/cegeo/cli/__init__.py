"""The ``cegeo`` command.

Every module ``cegeo/cli/cmd_*.py`` registers its sub-command(s) on :data:`app` when imported;
:func:`main` imports them all, runs the app, and turns user errors (:class:`InputError`, missing
files) into one line on stderr and exit status 2.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import pkgutil
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import typer

from .._signals import terminate_as_interrupt
from .._validation import InputError

app = typer.Typer(
    name="cegeo",
    help=(
        "Train classifiers on label-imbalanced data: predict the geometry each CE loss converges "
        "to, simulate it, train, correct and report. Imbalance ratio R = n_max/n_min >= 1 "
        "everywhere (other tools use the factor 1/R)."
    ),
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_loaded = False


def _load_commands() -> None:
    global _loaded
    if _loaded:
        return
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if mod.name.startswith("cmd_"):
            importlib.import_module(f"{__name__}.{mod.name}")
    for info in app.registered_commands:
        if info.help is None and info.callback is not None:
            info.help = reflow_help(inspect.getdoc(info.callback) or "")
    _loaded = True


def reflow_help(doc: str) -> str:
    r"""A command's docstring as help text: each paragraph on one line, for the terminal to wrap.

    typer's rich help keeps the single line breaks of a docstring after its first paragraph, so
    lines wrapped at the source's width came out ragged on an 80-column terminal (a full line,
    then a word or two on the next). Paragraphs stay separated by a blank line.

    >>> reflow_help("Summary.\n\nOne sentence\nwrapped in the source.\n\nExample: cegeo x")
    'Summary.\n\nOne sentence wrapped in the source.\n\nExample: cegeo x'
    """
    paragraphs = (" ".join(p.split()) for p in inspect.cleandoc(doc).split("\n\n"))
    return "\n\n".join(p for p in paragraphs if p)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    if version:
        from .. import __version__

        typer.echo(f"cegeo {__version__}")
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """cegeo's own UserWarnings print as one ``warning: ...`` line, without Python's source line."""
    original = warnings.showwarning

    def show(
        message: Any, category: type[Warning], filename: str, lineno: int, *args: Any, **kw: Any
    ) -> None:
        if issubclass(category, UserWarning) and "cegeo" in Path(filename).parts:
            typer.echo(f"warning: {message}", err=True)
        else:
            original(message, category, filename, lineno, *args, **kw)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = original


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status (0 ok, 1 failure, 2 bad input)."""
    _load_commands()
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        # Non-standalone: usage errors come back as exceptions, so they too print one line.
        with _warnings_as_lines(), terminate_as_interrupt():
            result = app(args=args, prog_name="cegeo", standalone_mode=False)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except InputError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except FileNotFoundError as exc:
        missing = exc.filename if exc.filename is not None else str(exc)
        typer.echo(f"error: file not found: {missing}", err=True)
        return 2
    except MemoryError:
        # An input too large for this machine (declared sizes are checked, but not every
        # structure can be bounded before it is read): one line, not a traceback.
        typer.echo("error: out of memory while reading or processing the input.", err=True)
        return 1
    except OSError as exc:
        # Output paths are checked before any work (one line, status 2); what fails later (a
        # full disk, a folder removed mid-run) is not bad input but still one line, status 1.
        where = f": {exc.filename}" if exc.filename is not None else ""
        typer.echo(f"error: {exc.strerror or exc}{where}", err=True)
        return 1
    except (KeyboardInterrupt, typer.Abort):
        typer.echo("Aborted.", err=True)
        return 130
    except Exception as exc:
        # typer/click usage errors (bad option value, missing argument, unknown command) share
        # click's ClickException interface; anything else is a bug and keeps its traceback.
        if hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int):
            message = " ".join(str(exc.format_message()).split())
            commands = {c.name for c in app.registered_commands}
            where = f"cegeo {args[0]}" if args and args[0] in commands else "cegeo"
            typer.echo(f"error: {message} (see `{where} --help`)", err=True)
            return int(exc.exit_code)
        raise
    return result if isinstance(result, int) else 0


def entry() -> None:  # pragma: no cover - thin wrapper for the console script
    sys.exit(main())
