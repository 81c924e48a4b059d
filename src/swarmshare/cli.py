"""The `swarmshare` command line: every command a person types."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from swarmshare import __version__
from swarmshare.errors import AmbiguousError, SwarmshareError, UsageError
from swarmshare.settings import Settings, default_home
from swarmshare.store.db import Database
from swarmshare.store.hashing import scan_path
from swarmshare.store.library import Library
from swarmshare.ui import err, fmt_size, out

BIG_SHARE_BYTES = 32 * 1024 * 1024


class SwarmshareGroup(click.Group):
    """A click group that turns our errors into one clear line on stderr and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AmbiguousError as exc:
            _fail(str(exc), exc.candidates)
        except SwarmshareError as exc:
            _fail(str(exc))
        except KeyboardInterrupt:
            err.print("interrupted")
            sys.exit(130)
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            _fail(f"{exc.strerror or exc}{where}")


def _fail(message: str, details: list[str] | None = None, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    for line in details or []:
        err.print(f"  {line}", markup=False)
    sys.exit(code)


@click.group(cls=SwarmshareGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="swarmshare")
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="SWARMSHARE_HOME",
    help="Data directory (default: the platform's user data directory).",
)
@click.pass_context
def main(ctx: click.Context, home: Path | None) -> None:
    """Share files with everyone on your local network: no server, no accounts, no setup."""
    ctx.obj = Settings(home=(home or default_home()).expanduser())


def _settings(ctx: click.Context) -> Settings:
    settings = ctx.find_object(Settings)
    assert settings is not None
    return settings


def _open_library(settings: Settings) -> Library:
    try:
        db = Database.open_home(settings.home)
    except OSError as exc:
        raise UsageError(f"cannot use data directory {settings.home}: {exc.strerror}") from None
    return Library(db)


def _print_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def share(ctx: click.Context, paths: tuple[str, ...], as_json: bool) -> None:
    """Share files or folders with the network (hashes them; files stay where they are)."""
    settings = _settings(ctx)
    library = _open_library(settings)
    results: list[dict[str, object]] = []
    failures = 0
    for path in paths:
        try:
            total = sum(f.stat.size for f in scan_path(path)[2])
            with _share_progress(total, path, quiet=as_json) as advance:
                result = library.share(path, progress=advance)
        except SwarmshareError as exc:
            err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
            failures += 1
            continue
        for skipped in result.skipped:
            err.print(f"skipped {skipped}", markup=False)
        record = result.record
        results.append(record.as_json() | {"unchanged": result.unchanged})
        if not as_json:
            note = " (unchanged)" if result.unchanged else ""
            out.print(
                f"shared  {record.short_id}  {record.name}  {fmt_size(record.size)}{note}",
                markup=False,
            )
    _notify_daemon(settings)
    if as_json:
        _print_json(results)
    if failures:
        sys.exit(1)


class _share_progress:
    """A progress bar on stderr for hashing big shares; nothing for small ones."""

    def __init__(self, total: int, label: str, quiet: bool) -> None:
        self._show = total >= BIG_SHARE_BYTES and not quiet and err.is_terminal
        self._progress = Progress(
            TextColumn("hashing {task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
            disable=not self._show,
        )
        self._task = self._progress.add_task(label, total=total)

    def __enter__(self) -> Callable[[int], None]:
        self._progress.start()
        return lambda n: self._progress.advance(self._task, n)

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()


@main.command()
@click.argument("ref")
@click.pass_context
def unshare(ctx: click.Context, ref: str) -> None:
    """Stop sharing a content, named by ID prefix or name (the files stay on disk)."""
    settings = _settings(ctx)
    record = _open_library(settings).unshare(ref)
    _notify_daemon(settings)
    out.print(f"unshared  {record.short_id}  {record.name}", markup=False)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the library as JSON.")
@click.pass_context
def library(ctx: click.Context, as_json: bool) -> None:
    """List what this peer shares."""
    lib = _open_library(_settings(ctx))
    records = lib.contents()
    if as_json:
        _print_json([r.as_json() | {"intact": lib.is_intact(r.id)} for r in records])
        return
    if not records:
        out.print("nothing shared yet: swarmshare share PATH")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("ID", "NAME", "SIZE", "CHUNKS", "PATH"):
        table.add_column(column, justify="right" if column in ("SIZE", "CHUNKS") else "left")
    for r in records:
        flag = "" if lib.is_intact(r.id) else " [changed on disk]"
        table.add_row(r.short_id, r.name + flag, fmt_size(r.size), str(r.chunks), r.root)
    out.print(table)


def _notify_daemon(settings: Settings) -> None:
    """Tell a running daemon that the library changed, so that it announces at once."""
