"""The `swarmshare` command line: every command a person types."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from swarmshare import __version__
from swarmshare.app.control_client import ControlClient
from swarmshare.app.seedlog import seed_log_lines
from swarmshare.app.standalone import NetworkView, browse, standalone_get
from swarmshare.errors import (
    AmbiguousError,
    DaemonError,
    NotFoundError,
    SwarmshareError,
    UsageError,
)
from swarmshare.logs import LOG_FILE, setup_logging
from swarmshare.settings import (
    DEFAULT_CONTROL_PORT,
    DEFAULT_DISCOVERY_PORT,
    DEFAULT_INTERVAL_SECONDS,
    DEFAULT_LEGACY_PORT,
    DEFAULT_PEER_PORT,
    Settings,
    default_home,
)
from swarmshare.store.db import Database
from swarmshare.store.hashing import scan_path
from swarmshare.store.library import Library
from swarmshare.ui import (
    add_row,
    err,
    error_line,
    fmt_ago,
    fmt_rate,
    fmt_size,
    fmt_time,
    out,
    plain,
    shown,
    table,
)

if TYPE_CHECKING:
    from rich.progress import Progress

BIG_SHARE_BYTES = 32 * 1024 * 1024
LOG_TABLE_ENTRIES = 50
LOG_ALL_ENTRIES = 100_000


_HOME = "swarmshare.home"
_VERBOSITY = "swarmshare.verbosity"


def _remember_home(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is not None:  # given after the command, it wins over before
        ctx.meta[_HOME] = value


def _count_verbose(ctx: click.Context, _param: click.Parameter, value: int) -> None:
    ctx.meta[_VERBOSITY] = ctx.meta.get(_VERBOSITY, 0) + value


def _count_quiet(ctx: click.Context, _param: click.Parameter, value: int) -> None:
    ctx.meta[_VERBOSITY] = ctx.meta.get(_VERBOSITY, 0) - value


def global_options(*, envvar: bool) -> list[click.Parameter]:
    """--home, -v and -q: taken before the command (`envvar`: there, $SWARMSHARE_HOME too)
    or after it."""
    return [
        click.Option(
            ["--home"],
            type=click.Path(file_okay=False, path_type=Path),
            envvar="SWARMSHARE_HOME" if envvar else None,
            expose_value=False,
            callback=_remember_home,
            help="Data directory (default: $SWARMSHARE_HOME, else the platform's user data"
            " directory).",
        ),
        click.Option(
            ["-v", "--verbose"],
            count=True,
            expose_value=False,
            callback=_count_verbose,
            help="Log more: debug messages too.",
        ),
        click.Option(
            ["-q", "--quiet"],
            count=True,
            expose_value=False,
            callback=_count_quiet,
            help="Log less: warnings and errors only.",
        ),
    ]


class SwarmshareCommand(click.Command):
    """A command that takes the global options after its name too, and sets up the settings
    and logging they ask for before it runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        taken = {name for param in self.params for name in param.opts}
        self.params += [p for p in global_options(envvar=False) if not taken & set(p.opts)]

    def invoke(self, ctx: click.Context) -> Any:
        if ctx.params.get("quiet") is True:  # a command's own --quiet flag (get) counts too
            ctx.meta[_VERBOSITY] = ctx.meta.get(_VERBOSITY, 0) - 1
        if "quiet" in ctx.params and ctx.meta.get(_VERBOSITY, 0) < 0:
            ctx.params["quiet"] = True
        ctx.obj = Settings(home=Path(ctx.meta.get(_HOME) or default_home()).expanduser())
        setup_logging(_verbosity(ctx))
        return super().invoke(ctx)


class SwarmshareGroup(click.Group):
    """A click group that turns our errors into one clear line on stderr and an exit code."""

    command_class = SwarmshareCommand

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
    err.print(error_line(message))
    for line in details or []:
        err.print(f"  {shown(line)}")
    sys.exit(code)


@click.group(
    cls=SwarmshareGroup,
    params=global_options(envvar=True),
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="swarmshare")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Share files with everyone on your local network: no server, no accounts, no setup.

    --home, -v and -q work before or after the command's name."""
    ctx.obj = Settings(home=Path(ctx.meta.get(_HOME) or default_home()).expanduser())


def _verbosity(ctx: click.Context) -> int:
    """-v (+1 each) and -q (-1 each), before and after the command."""
    return int(ctx.meta.get(_VERBOSITY, 0))


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
            err.print(error_line(exc))
            failures += 1
            continue
        for skipped in result.skipped:
            err.print(f"skipped {shown(skipped)}")
        record = result.record
        results.append(record.as_json() | {"unchanged": result.unchanged})
        if not as_json:
            note = " (unchanged)" if result.unchanged else ""
            out.print(
                f"shared  {record.short_id}  {shown(record.name)}  {fmt_size(record.size)}{note}",
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
        show = total >= BIG_SHARE_BYTES and not quiet and err.is_terminal
        self._progress = (
            _progress_bar("hashing {task.description}", transient=True) if show else None
        )
        self._task = self._progress.add_task(shown(label), total=total) if self._progress else None

    def __enter__(self) -> Callable[[int], None]:
        progress, task = self._progress, self._task
        if progress is None or task is None:
            return lambda n: None
        progress.start()
        return lambda n: progress.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def _progress_bar(description: str, *extra: str, transient: bool = False) -> Progress:
    """A rich progress bar on stderr: description, bar, bytes, rate, time left, `extra` texts.
    (rich.progress is imported here, not at start: most commands never draw one.)"""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn(description, markup=False),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        *(TextColumn(text, markup=False) for text in extra),
        console=err.console,
        transient=transient,
    )


@main.command()
@click.argument("ref")
@click.pass_context
def unshare(ctx: click.Context, ref: str) -> None:
    """Stop sharing a content, named by ID prefix or name (the files stay on disk)."""
    settings = _settings(ctx)
    record = _open_library(settings).unshare(ref)
    _notify_daemon(settings)
    out.print(f"unshared  {record.short_id}  {shown(record.name)}")


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
    grid = table(("ID", "NAME", "SIZE", "CHUNKS", "PATH"), right=("SIZE", "CHUNKS"))
    for r in records:
        name = plain(r.name)
        if not lib.is_intact(r.id):
            name.append(" [changed on disk]", style="bold yellow")
        add_row(grid, r.short_id, name, fmt_size(r.size), str(r.chunks), r.root)
    out.print(grid)


def _notify_daemon(settings: Settings) -> None:
    """Tell a running daemon that the library changed, so that it announces at once."""
    client = ControlClient.find(settings.home)
    if client is not None:
        client.post("reload", {})


def _parse_peer(value: str, default_port: int) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or "]" in port:
        return value.strip("[]"), default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--peer {value}: the port must be a number from 1 to 65535")
    return host.strip("[]"), int(port)


def finding_options(bind_help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """How to find peers (--discovery-port, --broadcast, --peer, --bind, the swarm secret):
    run, ls, peers and get; `bind_help` says what --bind means to the command."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        options = [
            click.option(
                "--discovery-port",
                type=click.IntRange(1, 65535),
                default=DEFAULT_DISCOVERY_PORT,
                show_default=True,
                help="UDP port of announcements.",
            ),
            click.option(
                "--broadcast",
                "broadcast",
                multiple=True,
                metavar="ADDR",
                help="Announce to this address (repeatable; default: every interface's broadcast).",
            ),
            click.option(
                "--peer",
                "peers",
                multiple=True,
                metavar="HOST[:PORT]",
                help="Also announce to this peer by unicast (repeatable; for other subnets).",
            ),
            click.option("--bind", default="0.0.0.0", show_default=True, help=bind_help),
            click.option(
                "--secret",
                envvar="SWARMSHARE_SECRET",
                default=None,
                help="Private swarm: only peers with this secret see and fetch"
                " (env SWARMSHARE_SECRET; default: an open swarm).",
            ),
            click.option(
                "--secret-file",
                type=click.Path(dir_okay=False, path_type=Path),
                default=None,
                help="Private swarm: read the secret from this file.",
            ),
        ]
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def announcing_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """How a serving peer announces itself (run only): --interval, --name."""
    func = click.option(
        "--name", default=None, help="Name shown to other peers (default: host name)."
    )(func)
    return click.option(
        "--interval",
        type=click.FloatRange(0.05, 3600),
        default=DEFAULT_INTERVAL_SECONDS,
        show_default=True,
        help="Seconds between announcements.",
    )(func)


def chunk_timeout_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """--chunk-timeout: commands that fetch chunks (run, get)."""
    return click.option(
        "--chunk-timeout",
        type=click.FloatRange(0.1, 3600),
        default=None,
        help="Seconds a chunk may take before it is asked elsewhere (default: adaptive).",
    )(func)


BIND_TO_SERVE = "Local address to serve on and announce from."
BIND_TO_ASK = "Without a daemon: local address to ask peers from."
BIND_TO_FETCH = "Without a daemon: local address to ask peers and fetch from."


def _with_discovery(settings: Settings, kw: dict[str, Any]) -> Settings:
    port = kw.pop("discovery_port")
    peers = tuple(_parse_peer(p, port) for p in kw.pop("peers"))
    name = kw.pop("name", None) or settings.name
    chunk_timeout = kw.pop("chunk_timeout", None)
    secret, secret_file = kw.pop("secret"), kw.pop("secret_file")
    if secret_file is not None:
        try:
            secret = secret_file.read_text().strip()
        except OSError as exc:
            raise UsageError(f"cannot read --secret-file {secret_file}: {exc.strerror}") from None
    if secret is not None and len(secret) < 8:
        raise UsageError("a swarm secret must be at least 8 characters")
    idle = settings.read_idle_timeout if chunk_timeout is None else min(10.0, chunk_timeout)
    return replace(
        settings,
        chunk_timeout=chunk_timeout,
        read_idle_timeout=idle,
        secret=secret,
        discovery_port=port,
        broadcast=tuple(kw.pop("broadcast")),
        peers=peers,
        bind=kw.pop("bind"),
        interval=kw.pop("interval", settings.interval),
        name=name,
    )


@main.command()
@finding_options(BIND_TO_SERVE)
@announcing_options
@chunk_timeout_option
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PEER_PORT,
    show_default=True,
    help="TCP port of the peer server (0 = any free port).",
)
@click.option(
    "--control-port",
    type=click.IntRange(0, 65535),
    default=None,
    help=f"Port of the control API and web page on 127.0.0.1 (0 = any free port; default:"
    f" {DEFAULT_CONTROL_PORT}, or any free port when another program has it; the CLI finds"
    " the port in the home).",
)
@click.option(
    "--legacy",
    is_flag=True,
    help="Also exchange chunks with peers running the original four scripts.",
)
@click.option(
    "--legacy-port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_LEGACY_PORT,
    show_default=True,
    help="TCP port of the seed-compatible chunk server (and of seed uploaders).",
)
@click.pass_context
def run(
    ctx: click.Context,
    /,
    port: int,
    control_port: int | None,
    legacy: bool,
    legacy_port: int,
    **kw: Any,
) -> None:
    """Run the peer: announce, discover, serve, download. Stop with Ctrl-C."""
    settings = replace(
        _with_discovery(_settings(ctx), kw),
        port=port,
        control_port=control_port,
        legacy=legacy,
        legacy_port=legacy_port,
    )
    if legacy and settings.secret:
        raise UsageError(
            "--legacy and a swarm secret do not mix: the original scripts cannot prove a secret"
        )

    setup_logging(_verbosity(ctx), log_file=settings.home / LOG_FILE)
    say = logging.getLogger("swarmshare.daemon").info

    from swarmshare.app.daemon import Daemon  # the server side loads only for `run`

    asyncio.run(Daemon(settings, say).run())


def look_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--wait and --json, shared by ls and peers."""
    func = click.option("--json", "as_json", is_flag=True, help="Print JSON, not a table.")(func)
    return click.option(
        "--wait",
        type=click.FloatRange(0, 600),
        default=2.0,
        show_default=True,
        help="Without a daemon: seconds to wait for answers.",
    )(func)


@main.command(name="ls")
@finding_options(BIND_TO_ASK)
@look_options
@click.pass_context
def ls_command(ctx: click.Context, /, wait: float, as_json: bool, **kw: Any) -> None:
    """List what the network shares."""
    items = _look(ctx, wait, kw).items
    if as_json:
        _print_json(items)
        return
    if not items:
        out.print("nothing on the network yet (no peers answered)")
        return
    grid = table(("ID", "NAME", "SIZE", "PEERS", "STATE"), right=("SIZE", "PEERS"))
    for item in items:
        state = "complete" if item["complete"] else "partial"
        if item.get("legacy"):
            state = "legacy (original scripts), unverified"
        if item.get("here"):
            state += ", here"
        size = item["size"]
        add_row(
            grid,
            str(item["id"])[:12],
            item["name"],
            "?" if size is None else fmt_size(int(str(size))),
            item["peers"],
            state,
        )
    out.print(grid)


@main.command()
@finding_options(BIND_TO_ASK)
@look_options
@click.pass_context
def peers(ctx: click.Context, /, wait: float, as_json: bool, **kw: Any) -> None:
    """List the live peers."""
    found = _look(ctx, wait, kw).peers
    if as_json:
        _print_json(found)
        return
    if not found:
        out.print("no peers found")
        return
    grid = table(("NAME", "ADDRESS", "PORT", "LAST SEEN", "ITEMS", "PEER ID"))
    for p in found:
        add_row(
            grid,
            p["name"],
            str(p["address"]),
            str(p["port"]),
            fmt_ago(float(str(p["last_seen"]))),
            str(p["items"]),
            str(p["peer_id"]),
        )
    out.print(grid)


def _look(ctx: click.Context, wait: float, kw: dict[str, Any]) -> NetworkView:
    settings = _with_discovery(_settings(ctx), kw)
    client = ControlClient.find(settings.home)
    if client is not None:
        return NetworkView(client.get("network"), client.get("peers"))
    return asyncio.run(browse(settings, wait))


@main.command()
@click.argument("ref")
@click.option("-o", "--output", metavar="DEST", help="File or folder to write to.")
@click.option(
    "--wait",
    type=click.FloatRange(0, 600),
    default=5.0,
    show_default=True,
    help="Seconds to wait for a peer that holds it.",
)
@click.option("--force", is_flag=True, help="Replace DEST if it exists and differs.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary, no progress bar.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
@finding_options(BIND_TO_FETCH)
@chunk_timeout_option
@click.pass_context
def get(
    ctx: click.Context,
    /,
    ref: str,
    output: str | None,
    wait: float,
    force: bool,
    as_json: bool,
    quiet: bool,
    **kw: Any,
) -> None:
    """Download NAME, ID prefix or ID from every peer that holds it, verifying every chunk."""
    settings = _with_discovery(_settings(ctx), kw)
    view = DownloadView(enabled=not (quiet or as_json))
    client = ControlClient.find(settings.home)
    try:
        with view:
            if client is not None:
                stats = _get_through_daemon(client, ref, output, force, wait, view)
            else:
                stats = asyncio.run(
                    standalone_get(
                        settings,
                        ref,
                        output,
                        Path.cwd(),
                        force=force,
                        wait=wait,
                        on_change=lambda st: view.update(st.as_json()),
                    )
                ).as_json()
    except KeyboardInterrupt:
        if client is not None and view.current_id:
            client.post(f"downloads/{view.current_id}/pause", {})
        err.print("paused: run the same command again to resume")
        sys.exit(130)
    if as_json:
        _print_json(stats)
    elif not quiet:
        seconds = max(1e-6, float(stats["seconds"]))
        peers = len(stats["by_peer"]) or "local"
        check = "SHA-256 verified" if stats["verified"] else "UNVERIFIED"
        out.print(
            f"got {shown(stats['name'])} ({fmt_size(stats['total_bytes'])}) in {seconds:.1f} s, "
            f"{fmt_rate(stats['total_bytes'] / seconds)}, from {peers} peer(s); "
            f"{check} -> {shown(stats['dest'])}"
        )
        if stats.get("legacy"):
            err.print(
                "note: this came from peers running the original scripts, whose protocol has"
                " no hashes: swarmshare cannot tell whether these bytes are right.",
                markup=False,
            )


def _get_through_daemon(
    client: ControlClient,
    ref: str,
    output: str | None,
    force: bool,
    wait: float,
    view: DownloadView,
) -> dict[str, Any]:
    body = {
        "ref": ref,
        "output": str(Path(output).absolute()) if output else None,
        "dest_dir": str(Path.cwd()),
        "force": force,
        "wait": wait,
    }
    stats: dict[str, Any] = client.post("downloads", body, timeout=wait + 30)
    view.current_id = str(stats["id"])
    deadline = time.monotonic() + wait
    while stats["state"] not in ("done", "failed", "cancelled", "paused"):
        if stats["state"] == "finding peers" and time.monotonic() > deadline:
            client.post(f"downloads/{view.current_id}/cancel", {})
            raise NotFoundError(f"no peer offers {ref} (waited {wait:.0f} s)")
        view.update(stats)
        time.sleep(0.2)
        stats = client.get(f"downloads/{view.current_id}")
    view.update(stats)
    if stats["state"] != "done":
        raise SwarmshareError(stats["error"] or f"download {stats['state']}")
    return stats


class DownloadView:
    """The progress bar of `get`: bytes, rate, ETA, peers in use, chunks retried."""

    def __init__(self, enabled: bool) -> None:
        self.current_id = ""
        self._progress = (
            _progress_bar(
                "{task.description}", "{task.fields[peers]} peer(s)  {task.fields[retried]} retried"
            )
            if enabled
            else None
        )
        self._task = (
            self._progress.add_task("finding peers", total=None, peers=0, retried=0)
            if self._progress
            else None
        )

    def __enter__(self) -> DownloadView:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, stats: dict[str, Any]) -> None:
        self.current_id = str(stats["id"])
        if self._progress is None or self._task is None:
            return
        self._progress.update(
            self._task,
            description=shown(stats["name"]),
            total=stats["total_bytes"] or None,
            completed=stats["done_bytes"],
            peers=stats["peers_in_use"],
            retried=stats["retried"],
        )


@main.command()
@click.option(
    "--size",
    "size_mib",
    type=click.IntRange(1, 4096),
    default=64,
    show_default=True,
    help="Size of the generated file in MiB.",
)
@click.option(
    "--peers",
    type=click.IntRange(2, 20),
    default=4,
    show_default=True,
    help="How many peers (all but one share the file).",
)
@click.option("--keep", is_flag=True, help="Keep the demo's folder (homes, logs, files).")
def demo(size_mib: int, peers: int, keep: bool) -> None:
    """Run a real swarm on loopback: peers find each other, share, and download a file."""
    from swarmshare.app.demo import run_demo

    run_demo(size_mib, peers, keep, lambda: DownloadView(enabled=err.is_terminal))


@main.command(name="open")
@click.option("--print-url", is_flag=True, help="Print the URL instead of opening a browser.")
@click.pass_context
def open_page(ctx: click.Context, print_url: bool) -> None:
    """Open the running peer's web page in a browser."""
    settings = _settings(ctx)
    client = ControlClient.find(settings.home)
    if client is None:
        raise DaemonError(f"no swarmshare daemon runs for {settings.home} (start: swarmshare run)")
    url = f"http://127.0.0.1:{client.info.port}/login?token={client.info.token}"
    import webbrowser

    if print_url or not webbrowser.open(url):
        out.print(url, markup=False)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show the running daemon's state."""
    settings = _settings(ctx)
    client = ControlClient.find(settings.home)
    if client is None:
        raise DaemonError(f"no swarmshare daemon runs for {settings.home} (start: swarmshare run)")
    state = client.get("status")
    if as_json:
        _print_json(state)
        return
    out.print(
        f"peer {shown(repr(state['name']))} ({state['peer_id']})"
        f" on {state['address']}:{state['port']}\n"
        f"discovery UDP {state['discovery_port']} -> {', '.join(state['broadcast'])}\n"
        f"{state['peers']} peer(s) live, sharing {state['items']} item(s), "
        f"served {state['served_chunks']} chunk(s) ({fmt_size(state['served_bytes'])})\n"
        f"web page: swarmshare open (http://127.0.0.1:{state['control_port']}/)"
    )
    for d in state["downloads"]:
        share = f"{d['done_bytes'] * 100 // max(1, d['total_bytes'])}%" if d["total_bytes"] else ""
        out.print(
            shown(
                f"download {d['name']}: {d['state']} {share} -> {d['dest']}"
                + (f" ({d['error']})" if d["error"] else "")
            )
        )
    if state.get("legacy"):
        legacy = state["legacy"]
        out.print(
            f"legacy mode: TCP {legacy['port']}, {legacy['seed_contents']} seed content(s) heard,"
            f" {legacy['served']} piece(s) served, {legacy['refused']} request(s) refused",
            markup=False,
        )


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--limit",
    type=click.IntRange(1, LOG_ALL_ENTRIES),
    default=None,
    help=f"Show only the newest N entries (default: {LOG_TABLE_ENTRIES} in a table or JSON;"
    f" with --format seed, every entry up to {LOG_ALL_ENTRIES:,}).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "seed"]),
    default="table",
    show_default=True,
    help="seed: write Upload_log.txt and Download_Log.txt in the original scripts' formats"
    " (every entry unless --limit says otherwise).",
)
@click.option(
    "--dir",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(),
    help="With --format seed: where to write the two files.",
)
@click.pass_context
def log(ctx: click.Context, as_json: bool, limit: int | None, fmt: str, out_dir: Path) -> None:
    """Show the transfer log: every chunk served and fetched."""
    limit = limit or (LOG_ALL_ENTRIES if fmt == "seed" else LOG_TABLE_ENTRIES)
    settings = _settings(ctx)
    client = ControlClient.find(settings.home)
    if client is not None:
        rows: list[dict[str, Any]] = client.get(f"log?limit={limit}")
    else:
        db = Database.open_home(settings.home)
        try:
            rows = [dict(r) for r in db.transfers(limit)]
        finally:
            db.close()
    if fmt == "seed":
        upload, download = seed_log_lines(rows)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "Upload_log.txt").write_text("".join(f"{line}\n" for line in upload))
        (out_dir / "Download_Log.txt").write_text("".join(f"{line}\n" for line in download))
        out.print(
            f"wrote {out_dir / 'Upload_log.txt'} ({len(upload)} lines) and "
            f"{out_dir / 'Download_Log.txt'} ({len(download)} lines)",
            markup=False,
        )
        return
    if as_json:
        _print_json(rows)
        return
    if not rows:
        out.print("no transfers yet")
        return
    grid = table(("TIME", "DIR", "PEER", "CONTENT", "CHUNK", "BYTES", "RESULT"))
    for r in rows:
        add_row(
            grid,
            fmt_time(r["ts"]),
            r["direction"],
            r["peer"],
            r["name"] or r["content_id"][:12],
            str(r["chunk"]),
            str(r["bytes"]),
            r["result"],
        )
    out.print(grid)
