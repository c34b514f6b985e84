"""What every command shares: the one place errors become one-line messages, and the console."""

from __future__ import annotations

import functools
import os
import sys

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

from ..errors import LabelfixError, UsageError

console = Console(stderr=True, highlight=False, soft_wrap=True)  # messages: one line each
results = Console(highlight=False)  # tables and other results, on stdout


def printable(text: str) -> str:
    """Text with its control characters escaped (a file name may hold terminal escapes or newlines)."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def parse_floats(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UsageError(f"{what} {text!r}: expected numbers separated by commas, e.g. 0.3,0.5,0.7") from None


def handle_errors(fn):
    """Typed errors -> one line on stderr and exit 2 (usage) or 1; LABELFIX_DEBUG=1 shows the traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            console.print("labelfix: interrupted; re-run the same command to resume")
            raise typer.Exit(130)
        except Exception as e:
            if os.environ.get("LABELFIX_DEBUG") == "1":
                raise
            msg = str(e) if isinstance(e, LabelfixError) else f"unexpected error: {type(e).__name__}: {e} " \
                                                               "(LABELFIX_DEBUG=1 shows the traceback)"
            console.print(f"labelfix: error: {printable(msg)}", markup=False)
            raise typer.Exit(2 if isinstance(e, UsageError) else 1)

    return wrapper


def is_tty() -> bool:
    return sys.stderr.isatty()


class _PlainHelpOption:
    """--help shown as it is typed (Typer labels each flag `<bool>` otherwise)."""

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option


class Command(_PlainHelpOption, TyperCommand):
    """A command whose --help shows flags as they are typed."""


class Group(_PlainHelpOption, TyperGroup):
    """The command group, likewise."""


def flag(default: bool, *names: str, help: str, panel: str | None = None):
    """An option that takes no value."""
    return typer.Option(default, *names, metavar="", help=help, show_default=False, rich_help_panel=panel)


def parse_ints(texts: list[str], what: str) -> tuple[int, ...]:
    """Values given as `--missing 0 --missing 255` or `--missing 0,255`."""
    try:
        return tuple(int(x) for text in texts for x in text.split(",") if x.strip())
    except ValueError:
        raise UsageError(f"{what} {','.join(texts)!r}: expected whole numbers, e.g. 255 or 0,255") from None
