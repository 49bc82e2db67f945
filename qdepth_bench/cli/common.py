"""What every command shares: the consoles, the root app and its command groups, common options, the
database opener, and printing or writing report views in one format.

Input errors surface as one line on stderr (`error: ...` naming the fix) and their exit code (2); a run
whose episodes ended in errors says how many and why in one line and exits 3; Ctrl-C during a run exits
130 after saying how many episodes are safely recorded.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from qdepth_bench.core.errors import INTERRUPTED_EXIT, UserError
from qdepth_bench.core.policy import Policy
from qdepth_bench.registry.base import parse_key_values
from qdepth_bench.registry.policies import make_policy
from qdepth_bench.report.render import FORMATS, render
from qdepth_bench.results.reference import reference_rows
from qdepth_bench.results.store import DB_ENV, Store, default_db_path

# Piped output (files, CI logs) gets wide tables instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


#: click's usage error, whichever click typer parses with (recent typers carry their own copy)
USAGE_ERROR: type[Any] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def _interrupted() -> None:
    err_console.print("interrupted; run the same command again to continue.")
    raise typer.Exit(INTERRUPTED_EXIT) from None


class UserErrorsAsOneLine(TyperGroup):
    """Every command's `UserError` becomes one line on stderr and its exit code, never a traceback; so does a
    usage error, and Ctrl-C or SIGTERM outside a run's own handling (exit 130)."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except KeyboardInterrupt:  # typer would exit 130 without a word
            _interrupted()

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM outside a run's own handling: 130 and one line
            _interrupted()
        except USAGE_ERROR as exc:  # a bad option value or an unknown option: one line, not click's block
            if type(exc).__name__ == "NoArgsIsHelpError":
                raise  # a command given no arguments prints its help, as asked
            command = exc.ctx.command_path if exc.ctx is not None else "qdepth-bench"
            message = " ".join(exc.format_message().split()).rstrip(".")
            err_console.print(
                f"error: {message}; see `{command} --help`.", markup=False, highlight=False, soft_wrap=True
            )
            raise typer.Exit(2) from None
        except sqlite3.DatabaseError as exc:  # raised wherever the file is read: one line, and the way out
            err_console.print(f"error: {database_trouble(exc)}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None


def database_trouble(exc: sqlite3.DatabaseError) -> str:
    """What a database error means for the user, and what to do."""
    path = default_db_path()
    for argument in sys.argv:  # the --db of this command, if given
        if argument.startswith("--db="):
            path = Path(argument.split("=", 1)[1])
    if "--db" in sys.argv[:-1]:
        path = Path(sys.argv[sys.argv.index("--db") + 1])
    if "readonly" in str(exc):
        return f"{path} is read-only: reports can read it, but a run needs a --db in a writable folder."
    if "full" in str(exc):
        return (
            f"the disk holding {path} is full ({exc}); free space, then run the same command again: every "
            "episode recorded before is kept, only the one in flight is lost."
        )
    return (
        f"{path} is damaged ({exc}); `qdepth-bench runs salvage --db {path} --out NEW.sqlite` copies every "
        "readable row into a new database."
    )


app = typer.Typer(
    cls=UserErrorsAsOneLine,
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Benchmark vision-language-action policies on LIBERO and SIMPLER; tables and leaderboards.",
)
runs_app = typer.Typer(cls=UserErrorsAsOneLine, no_args_is_help=True, help="List, show or delete recorded runs.")
app.add_typer(runs_app, name="runs")
depth_app = typer.Typer(
    cls=UserErrorsAsOneLine,
    no_args_is_help=True,
    help="Annotate demonstrations with depth, and encode it into VQ-VAE codes.",
)
app.add_typer(depth_app, name="depth")
data_app = typer.Typer(
    cls=UserErrorsAsOneLine, no_args_is_help=True, help="Generate demonstration datasets with a (scripted) policy."
)
app.add_typer(data_app, name="data")
train_app = typer.Typer(
    cls=UserErrorsAsOneLine,
    no_args_is_help=True,
    help="Train the depth VQ-VAE or co-train a policy from a recipe (content/training/*.yaml).",
)
app.add_typer(train_app, name="train")

DbOption = Annotated[
    Path | None, typer.Option("--db", help=f"results database (default: ${DB_ENV} or results/qdepth-bench.sqlite)")
]


CheckpointOption = Annotated[Path | None, typer.Option(help="checkpoint folder (same as --policy-arg checkpoint=)")]


def policy_options(policy_arg: list[str] | None, checkpoint: Path | None) -> dict[str, str]:
    """`--policy-arg` pairs, with `--checkpoint` as the `checkpoint` option."""
    options = parse_key_values(policy_arg or [])
    if checkpoint is not None:
        options["checkpoint"] = str(checkpoint)
    return options


#: exit status of a run that finished with episodes ending in errors (2: bad input, 130: interrupted)
EXIT_EPISODE_ERRORS = 3

#: One env worker per core (each simulator step is single-threaded work), capped for memory.
DEFAULT_WORKERS = max(1, min(os.cpu_count() or 1, 8))


def _known_format(value: str) -> str:
    if value.lower() not in FORMATS:
        raise typer.BadParameter(f"'{value}' is not one of {', '.join(FORMATS)}.")
    return value.lower()


FormatOption = Annotated[
    str, typer.Option("--format", "-f", callback=_known_format, help=f"output format: {', '.join(FORMATS)}")
]


@contextmanager
def progress_on_stderr(enabled: bool) -> Iterator[None]:
    """Send progress text to stderr while a machine-readable report is bound for stdout."""
    if not enabled:
        yield
        return
    console.file = sys.stderr
    try:
        yield
    finally:
        # back to following sys.stdout wherever it points when written (restoring the stream read at the start
        # would pin one that a caller, e.g. a test runner, has since closed)
        console.file = None  # type: ignore[assignment]


def open_store(db: Path | None) -> Store:
    """Open (or create) the database and make sure it holds the current reference numbers."""
    store = Store(db)
    rows, digest = reference_rows()
    store.load_references(rows, digest)
    return store


#: free disk beside the database below which a run is refused before its first episode
MIN_FREE_MB_FOR_ROWS = 10


def open_run_store(db: Path | None) -> Store:
    """The database a run writes to, refused in one line when it is read-only or its disk is full."""
    store = open_store(db)
    if store.read_only:
        raise UserError(f"--db {store.path} is read-only: reports can read it, but a run needs a writable --db.")
    free_mb = shutil.disk_usage(store.path.parent if str(store.path.parent) else ".").free / 2**20
    if free_mb < MIN_FREE_MB_FOR_ROWS:
        raise UserError(
            f"only {free_mb:.1f} MB free beside --db {store.path} ({MIN_FREE_MB_FOR_ROWS} MB asked for: episode "
            "rows, the run log and SQLite's journal); free space or pass a --db elsewhere."
        )
    return store


def build_policy(name: str, options: dict[str, str]) -> Policy:
    """A policy from the registry, with what it has to tell the user printed first."""
    policy = make_policy(name, options)
    for notice in policy.notices:
        err_console.print(notice, markup=False, highlight=False, soft_wrap=True)
    return policy


def print_views(views: list[Any], fmt: str, out: Path | None = None, **options: Any) -> None:
    """Print report views (or write them to `out`) in one format; rich goes to the terminal only, and a
    file asked for in rich format is written as Markdown."""
    name = fmt.lower()
    if name == "rich" and out is None:
        for table in render("rich", views):
            console.print(table)
        return
    if name == "rich":
        name = "markdown"
        err_console.print(f"rich output is for the terminal; writing {out} as Markdown (--format markdown).")
    write_text(render(name, views, **options), out)


def write_text(text: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(text)
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}; choose another --out.") from None
    err_console.print(f"wrote {out}")


def split_list(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None
