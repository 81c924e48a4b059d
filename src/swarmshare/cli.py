"""The `swarmshare` command line: every command a person types."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from swarmshare import __version__
from swarmshare.app.control_client import ControlClient
from swarmshare.app.seedlog import seed_log_lines
from swarmshare.app.session import FINISHED, Session, open_session
from swarmshare.config import (
    KEYS,
    ConfigFile,
    default_config_file,
    load_config,
    option_key,
    parse_peer,
    parse_rate,
)
from swarmshare.errors import (
    AmbiguousError,
    DaemonError,
    SwarmshareError,
    UsageError,
)
from swarmshare.logs import LOG_FILE, setup_logging
from swarmshare.settings import (
    DEFAULT_BITTORRENT_PORT,
    DEFAULT_CONTROL_PORT,
    DEFAULT_DISCOVERY_PORT,
    DEFAULT_INTERVAL_SECONDS,
    DEFAULT_LEGACY_PORT,
    DEFAULT_LOCALSEND_GROUP,
    DEFAULT_LOCALSEND_PORT,
    DEFAULT_PEER_PORT,
    Settings,
    default_home,
)
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
_CONFIG = "swarmshare.config"
_SOURCES = "swarmshare.sources"
_VERBOSITY = "swarmshare.verbosity"
COMMAND_LINE, ENVIRONMENT, DEFAULT = "command line", "environment", "default"


def _source(ctx: click.Context, name: str) -> str:
    """Where a parameter's value came from: the command line, the environment, or its default."""
    source = ctx.get_parameter_source(name)
    if source is click.core.ParameterSource.ENVIRONMENT:
        return ENVIRONMENT
    if source in (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.PROMPT):
        return COMMAND_LINE
    return DEFAULT


def _global_source(ctx: click.Context, name: str) -> str:
    """Where a global option's value came from: after the command, before it, or neither."""
    after = _source(ctx, name)
    if after != DEFAULT or ctx.parent is None:
        return after
    return _source(ctx.parent, name)


def _remember_home(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is not None:  # given after the command, it wins over before
        ctx.meta[_HOME] = value


def _remember_config(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is not None:  # given after the command, it wins over before
        ctx.meta[_CONFIG] = value


def _count_verbose(ctx: click.Context, _param: click.Parameter, value: int) -> None:
    ctx.meta[_VERBOSITY] = ctx.meta.get(_VERBOSITY, 0) + value


def _count_quiet(ctx: click.Context, _param: click.Parameter, value: int) -> None:
    ctx.meta[_VERBOSITY] = ctx.meta.get(_VERBOSITY, 0) - value


def global_options(*, envvar: bool) -> list[click.Parameter]:
    """--home, --config, -v and -q: taken before the command (`envvar`: there,
    $SWARMSHARE_HOME and $SWARMSHARE_CONFIG too) or after it."""
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
            ["--config"],
            type=click.Path(dir_okay=False, path_type=Path),
            envvar="SWARMSHARE_CONFIG" if envvar else None,
            expose_value=False,
            callback=_remember_config,
            help="Config file (default: $SWARMSHARE_CONFIG, else config.toml in the platform's"
            " user config directory, ~/.config/swarmshare/ on Linux).",
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
        if any(option_key(name) in KEYS for name in ctx.params):
            _apply_config(ctx)
        return super().invoke(ctx)


def _config_file(ctx: click.Context) -> ConfigFile:
    """The config file this command reads: --config, $SWARMSHARE_CONFIG, or the default one
    (which may be missing)."""
    named = ctx.meta.get(_CONFIG)
    if named is not None:
        return load_config(Path(named).expanduser(), required=True)
    return load_config(default_config_file(), required=False)


def _apply_config(ctx: click.Context) -> None:
    """Put the config file's values under the command's options the command line and the
    environment left at their defaults; remember where each value came from."""
    config = _config_file(ctx)
    sources: dict[str, str] = {}
    for name in ctx.params:
        source = _source(ctx, name)
        if source == DEFAULT and name in config.values:
            ctx.params[name] = config.values[name]
            source = config.where(name)
        sources[name] = source
    # A secret given on the command line or in the environment wins over the file's secret-file.
    if sources.get("secret") in (COMMAND_LINE, ENVIRONMENT) and sources.get(
        "secret_file", ""
    ).startswith("file "):
        ctx.params["secret_file"], sources["secret_file"] = None, DEFAULT
    ctx.meta[_SOURCES] = sources
    ctx.meta[_CONFIG + ".file"] = config


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
    err.print_error(message)
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


def _print_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def _printed_json_or_nothing(rows: list[Any], as_json: bool, nothing: str) -> bool:
    """A list command's JSON, or its line for an empty list; False when a table is to follow."""
    if as_json:
        _print_json(rows)
        return True
    if not rows:
        out.print(nothing)
        return True
    return False


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def share(ctx: click.Context, paths: tuple[str, ...], as_json: bool) -> None:
    """Share files or folders with the network (hashes them; files stay where they are)."""
    with _session(ctx) as session:
        progress = None if as_json else _share_progress
        results = session.share(list(paths), progress)
    failures = 0
    for result in results:
        if "error" in result:
            err.print_error(str(result["error"]))
            failures += 1
            continue
        for skipped in result.get("skipped", []):
            err.print(f"skipped {shown(skipped)}")
        if not as_json:
            note = " (unchanged)" if result["unchanged"] else ""
            out.print(
                f"shared  {str(result['id'])[:12]}  {shown(str(result['name']))}  "
                f"{fmt_size(int(result['size']))}{note}",
                markup=False,
            )
            out.print(f"        {result['magnet']}", markup=False, highlight=False, soft_wrap=True)
    if as_json:
        _print_json([r for r in results if "error" not in r])
    if failures:
        sys.exit(1)


@contextlib.contextmanager
def _session(ctx: click.Context, settings: Settings | None = None) -> Iterator[Session]:
    """The session of this command (the daemon's, or the app run here), closed after."""
    session = open_session(settings or _settings(ctx))
    try:
        yield session
    finally:
        session.close()


def _share_progress(label: str, total: int) -> Callable[[int], None]:
    """A progress bar on stderr for hashing a big share; nothing for small ones."""
    if total < BIG_SHARE_BYTES or not err.is_terminal:
        return lambda n: None
    progress = _progress_bar("hashing {task.description}", transient=True)
    task = progress.add_task(label, total=total)
    progress.start()
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        progress.advance(task, n)
        if done >= total:
            progress.stop()

    return advance


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
    with _session(ctx) as session:
        record = session.unshare(ref)
    out.print(f"unshared  {str(record['id'])[:12]}  {shown(str(record['name']))}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the library as JSON.")
@click.pass_context
def library(ctx: click.Context, as_json: bool) -> None:
    """List what this peer shares."""
    with _session(ctx) as session:
        records = session.library()
    if _printed_json_or_nothing(records, as_json, "nothing shared yet: swarmshare share PATH"):
        return
    grid = table(("ID", "NAME", "SIZE", "CHUNKS", "PATH"), right=("SIZE", "CHUNKS"))
    for r in records:
        name = plain(str(r["name"]))
        if not r["intact"]:
            name.append(" [changed on disk]", style="bold yellow")
        add_row(grid, str(r["id"])[:12], name, fmt_size(r["size"]), str(r["chunks"]), r["path"])
    out.print(grid)
    _print_magnets(records)


def _print_magnets(rows: list[Any]) -> None:
    """Each content's magnet link (BitTorrent v2), under the table: too long for a column."""
    links = [(str(r["id"])[:12], str(r["magnet"])) for r in rows if r.get("magnet")]
    if links:
        out.print("\nmagnet links:", markup=False, highlight=False)
    for short, link in links:
        out.print(f"{short}  {link}", markup=False, highlight=False, soft_wrap=True)


def _parse_peer(value: str, default_port: int) -> tuple[str, int]:
    try:
        return parse_peer(value, default_port)
    except ValueError as exc:
        raise UsageError(f"--peer {exc}") from None


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
            click.option(
                "--ipv6/--no-ipv6",
                default=True,
                show_default=True,
                help="Also find peers over IPv6 (link-local multicast on every IPv6 interface)"
                " and serve on IPv6; only with --bind 0.0.0.0.",
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
        ipv6=kw.pop("ipv6"),
    )


def localsend_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Where LocalSend listens and announces (run, send)."""
    func = click.option(
        "--localsend-group",
        default=DEFAULT_LOCALSEND_GROUP,
        show_default=True,
        metavar="ADDR",
        help="Where LocalSend announcements go: its multicast group, or a broadcast address.",
    )(func)
    return click.option(
        "--localsend-port",
        type=click.IntRange(1, 65535),
        default=DEFAULT_LOCALSEND_PORT,
        show_default=True,
        help="LocalSend's TCP (HTTPS) and UDP (discovery) port.",
    )(func)


def _with_localsend(settings: Settings, kw: dict[str, Any]) -> Settings:
    return replace(
        settings, localsend_port=kw.pop("localsend_port"), localsend_group=kw.pop("localsend_group")
    )


def _byte_rate(ctx: click.Context, param: click.Parameter, value: str) -> int:
    """A rate in bytes per second: a number with an optional K, M or G (powers of 1024)."""
    try:
        return parse_rate(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def run_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Every option of `run` (each also a key of the config file): run and config."""
    options: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        finding_options(BIND_TO_SERVE),
        announcing_options,
        chunk_timeout_option,
        click.option(
            "--port",
            type=click.IntRange(0, 65535),
            default=DEFAULT_PEER_PORT,
            show_default=True,
            help="TCP port of the peer server (0 = any free port).",
        ),
        click.option(
            "--control-port",
            type=click.IntRange(0, 65535),
            default=None,
            help=f"Port of the control API and web page on 127.0.0.1 (0 = any free port; default:"
            f" {DEFAULT_CONTROL_PORT}, or any free port when another program has it; the CLI"
            " finds the port in the home).",
        ),
        click.option(
            "--legacy",
            is_flag=True,
            help="Also exchange chunks with peers running the original four scripts.",
        ),
        click.option(
            "--legacy-port",
            type=click.IntRange(0, 65535),
            default=DEFAULT_LEGACY_PORT,
            show_default=True,
            help="TCP port of the seed-compatible chunk server (and of seed uploaders).",
        ),
        click.option(
            "--mdns/--no-mdns",
            default=True,
            show_default=True,
            help="Also advertise this peer and find others by mDNS/DNS-SD (_swarmshare._tcp),"
            " for networks that drop broadcast but pass multicast (never on loopback).",
        ),
        click.option(
            "--bittorrent",
            is_flag=True,
            help="Also be a BitTorrent peer (needs swarmshare[bittorrent]): seed every shared"
            " content, find BitTorrent peers on the LAN (local service discovery).",
        ),
        click.option(
            "--bittorrent-port",
            type=click.IntRange(0, 65535),
            default=DEFAULT_BITTORRENT_PORT,
            show_default=True,
            help="TCP/UDP port of the BitTorrent peer (0 = any free port).",
        ),
        click.option(
            "--dht",
            is_flag=True,
            help="With --bittorrent: also join the BitTorrent DHT (the internet-wide swarm).",
        ),
        click.option(
            "--tracker",
            "trackers",
            multiple=True,
            metavar="URL",
            help="With --bittorrent: announce every content to this tracker (repeatable).",
        ),
        click.option(
            "--upload-limit",
            default="0",
            callback=_byte_rate,
            metavar="RATE",
            help="Bytes per second all uploads together may send: 512K, 10M, 1G (0 = no limit).",
        ),
        click.option(
            "--download-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="Where downloads started from the web page go (default: the platform's"
            " downloads folder).",
        ),
        localsend_options,
        click.option(
            "--localsend",
            is_flag=True,
            help="Also receive like a LocalSend device: phones and laptops running LocalSend"
            " see this peer and send to it (into the download folder; then shared).",
        ),
        click.option(
            "--accept",
            type=click.Choice(["ask", "pin", "all"]),
            default="ask",
            show_default=True,
            help="Which LocalSend offers are taken: ask (see: swarmshare inbox), pin (those"
            " with --pin), all.",
        ),
        click.option(
            "--pin", default=None, help="The PIN LocalSend senders must give (default: none)."
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _run_settings(ctx: click.Context, kw: dict[str, Any]) -> Settings:
    """The settings of `run` from its options (the config file's already under them)."""
    download_dir = kw.pop("download_dir")
    settings = replace(
        _settings(ctx),
        port=kw.pop("port"),
        control_port=kw.pop("control_port"),
        legacy=kw.pop("legacy"),
        legacy_port=kw.pop("legacy_port"),
        upload_bytes_per_second=kw.pop("upload_limit"),
        mdns=kw.pop("mdns"),
        downloads_dir=None if download_dir is None else Path(download_dir).expanduser(),
        localsend=kw.pop("localsend"),
        accept=kw.pop("accept"),
        pin=kw.pop("pin"),
        bittorrent=kw.pop("bittorrent"),
        bittorrent_port=kw.pop("bittorrent_port"),
        dht=kw.pop("dht"),
        trackers=tuple(kw.pop("trackers")),
    )
    settings = _with_localsend(_with_discovery(settings, kw), kw)
    if settings.localsend and settings.accept == "pin" and not settings.pin:
        raise UsageError("--accept pin needs a PIN: give --pin (or pin in the config file)")
    if settings.legacy and settings.secret:
        raise UsageError(
            "--legacy and a swarm secret do not mix: the original scripts cannot prove a secret"
        )
    if settings.bittorrent and settings.secret:
        raise UsageError(
            "--bittorrent and a swarm secret do not mix: BitTorrent peers cannot prove a secret"
        )
    if (settings.dht or settings.trackers) and not settings.bittorrent:
        raise UsageError("--dht and --tracker need --bittorrent")
    return settings


@main.command()
@run_options
@click.pass_context
def run(ctx: click.Context, /, **kw: Any) -> None:
    """Run the peer: announce, discover, serve, download. Stop with Ctrl-C.

    Every option may also be set in the config file (see: swarmshare config)."""
    settings = _run_settings(ctx, kw)
    setup_logging(_verbosity(ctx), log_file=settings.home / LOG_FILE)
    import asyncio  # an event loop here only for commands that run one (not share, --version)

    from swarmshare.app.daemon import Daemon  # the server side loads only for `run`

    asyncio.run(Daemon(settings).run())


@main.command(name="config")
@run_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def config_command(ctx: click.Context, /, as_json: bool, **kw: Any) -> None:
    """Show the settings `run` would use, and where each comes from: default, the config file
    (with its line), the command line or the environment. Takes every option of `run`."""
    params = dict(kw)
    params["name"] = _run_settings(ctx, kw).name  # the same checks as `run`
    config: ConfigFile = ctx.meta[_CONFIG + ".file"]
    sources: dict[str, str] = ctx.meta[_SOURCES]
    home = Path(ctx.meta.get(_HOME) or default_home()).expanduser()
    rows: list[tuple[str, object, str]] = [
        ("home", str(home), _global_source(ctx, "home")),
    ]
    for key in KEYS:
        name = key.replace("-", "_")
        rows.append((key, _shown_value(name, params[name]), sources[name]))
    if params.get("secret") is not None:
        rows.append(("secret", "(set, not shown)", sources["secret"]))
    if as_json:
        _print_json(
            {
                "config_file": str(config.path),
                "config_file_exists": config.exists,
                "config_file_source": _global_source(ctx, "config"),
                "settings": {
                    key: {"value": value, "source": source} for key, value, source in rows
                },
            }
        )
        return
    note = "" if config.exists else " (none: defaults)"
    out.print(f"config file: {config.path}{note}", markup=False)
    grid = table(("SETTING", "VALUE", "FROM"))
    for key, value, source in rows:
        text = json.dumps(value) if isinstance(value, list | bool) else str(value)
        add_row(grid, key, "(none)" if value is None else text, source)
    out.print(grid)


def _shown_value(name: str, value: object) -> object:
    """A setting's value as config and JSON show it (paths and tuples as text and lists)."""
    if name == "pin" and value is not None:
        return "(set, not shown)"
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return value


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
    with _session(ctx, _with_discovery(_settings(ctx), kw)) as session:
        items = session.network(wait)
    if _printed_json_or_nothing(items, as_json, "nothing on the network yet (no peers answered)"):
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
    _print_magnets(items)


@main.command()
@finding_options(BIND_TO_ASK)
@look_options
@click.pass_context
def peers(ctx: click.Context, /, wait: float, as_json: bool, **kw: Any) -> None:
    """List the live peers."""
    with _session(ctx, _with_discovery(_settings(ctx), kw)) as session:
        found = session.peers(wait)
    if _printed_json_or_nothing(found, as_json, "no peers found"):
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


@main.command()
@click.argument("ref")
@click.option("-o", "--output", metavar="FILE", help="Where to write it [default: NAME.torrent].")
@click.option(
    "--hybrid",
    is_flag=True,
    help="Add the BitTorrent v1 half (SHA-1 pieces, BEP 47 pad files) for v1-only clients"
    " (aria2c, Transmission); reads the files, which must be here.",
)
@click.option(
    "--wait",
    type=click.FloatRange(0, 600),
    default=2.0,
    show_default=True,
    help="Without a daemon: seconds to wait for the holders to answer.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@finding_options(BIND_TO_ASK)
@click.pass_context
def torrent(
    ctx: click.Context,
    /,
    ref: str,
    output: str | None,
    hybrid: bool,
    wait: float,
    as_json: bool,
    **kw: Any,
) -> None:
    """Write a .torrent (BitTorrent v2; --hybrid: v1 too) of NAME, ID prefix or ID.

    Its web seeds (BEP 19) are the file routes of every peer known to hold all of it, so any
    BitTorrent client that takes web seeds downloads it from them; in a private swarm each
    URL carries that content's token in its path (anyone with the file can fetch it).
    """
    with _session(ctx, _with_discovery(_settings(ctx), kw)) as session:
        made = session.torrent(ref, hybrid, wait)
    data = base64.b64decode(str(made.pop("torrent")))
    target = Path(output) if output else Path(f"{made['name']}.torrent")
    if target.is_dir():
        target = target / f"{made['name']}.torrent"
    try:
        target.write_bytes(data)
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror}") from None
    made["file"] = str(target)
    if as_json:
        _print_json(made)
        return
    seeds = made["web_seeds"]
    out.print(f"wrote   {shown(str(target))}  ({len(seeds)} web seed(s))", markup=False)
    out.print(f"        {made['magnet']}", markup=False, highlight=False, soft_wrap=True)
    if not seeds:
        err.print("no peer serves it now: the torrent names no web seed")


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
@click.option(
    "--legacy-port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_LEGACY_PORT,
    show_default=True,
    help="TCP port of the original scripts' uploaders (for their contents).",
)
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
    legacy_port: int,
    **kw: Any,
) -> None:
    """Download NAME, ID prefix or ID from every peer that holds it, verifying every chunk.

    REF may also be a magnet link, a .torrent file or its http(s) URL: LAN holders of its
    content come first; BitTorrent peers too (needs swarmshare[bittorrent]; through a daemon,
    only one run with --bittorrent).

    DEST: a folder (an existing one, or any path ending in /, created if missing) gets the
    content under its own name; any other path is the exact file or folder to write. An
    existing DEST that differs is replaced only with --force (the old one is removed once the
    new one is complete); an identical one is left as it is. With no holder for --wait seconds
    (at the start or later) the download pauses and the command says so.
    """
    settings = replace(_with_discovery(_settings(ctx), kw), legacy_port=legacy_port)
    if ref.lower().endswith(".torrent") and "://" not in ref:
        ref = str(Path(ref).expanduser().absolute())  # a daemon's working folder is not ours
    view = DownloadView(enabled=not (quiet or as_json))
    with _session(ctx, settings) as session, view:
        stats = _follow(session, view, ref, output, force, wait)
    if as_json:
        _print_json(stats)
    elif not quiet:
        _say_got(stats)


def _follow(
    session: Session,
    view: DownloadView,
    ref: str,
    output: str | None,
    force: bool,
    wait: float,
) -> dict[str, Any]:
    """Start the download and show it until it ends; Ctrl-C pauses it (acknowledged)."""
    if output:  # the daemon's working folder is not ours: send an absolute path
        output = os.path.abspath(output) + ("/" if output.endswith(("/", os.sep)) else "")
    stats = session.start_download(ref, output, str(Path.cwd()), force, wait)
    return _follow_started(session, view, stats)


def _follow_started(session: Session, view: DownloadView, stats: dict[str, Any]) -> dict[str, Any]:
    """Show a started download until it ends; Ctrl-C pauses it (acknowledged)."""
    download_id = str(stats["id"])
    version = -1
    try:
        while stats["state"] not in FINISHED:
            view.update(stats)
            stats = session.watch(download_id, version, 1.0)
            version = int(stats.get("version", version))
    except KeyboardInterrupt:
        with _no_interrupts():
            stats = session.pause(download_id)
        view.stop()
        if stats["state"] != "done":
            err.print("paused: run the same command again to resume", markup=False)
            sys.exit(130)
        err.print("interrupted, but the download was already complete", markup=False)
    view.update(stats)
    if stats["state"] == "paused" and stats.get("no_holder"):
        view.stop()
        _fail(f"{stats['error']}; paused: run the same command again to resume")
    if stats["state"] != "done":
        view.stop()
        _fail(str(stats["error"] or f"download {stats['state']}"))
    return stats


@contextlib.contextmanager
def _no_interrupts() -> Iterator[None]:
    """While a pause is being acknowledged, a second Ctrl-C must not cut it short."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _say_got(stats: dict[str, Any]) -> None:
    check = "SHA-256 verified" if stats["verified"] else "UNVERIFIED"
    if stats.get("already_there"):
        out.print(
            f"already there: {shown(str(stats['name']))} ({fmt_size(stats['total_bytes'])})"
            f" is complete at {shown(str(stats['dest']))}; {check}, nothing written",
            markup=False,
        )
        return
    seconds = max(1e-6, float(stats.get("transfer_seconds") or stats["seconds"]))
    fetched = int(stats["fetched_bytes"])
    peers = len(stats["by_peer"])
    source = f"from {peers} peer(s)" if peers else "from files already here"
    out.print(
        f"got {shown(str(stats['name']))} ({fmt_size(stats['total_bytes'])}) in {seconds:.1f} s, "
        f"{fmt_rate(fetched / seconds)}, {source}; {check} -> {shown(str(stats['dest']))}",
        markup=False,
    )
    if stats.get("legacy"):
        err.print(
            "note: this came from peers running the original scripts, whose protocol has"
            " no hashes: swarmshare cannot tell whether these bytes are right.",
            markup=False,
        )


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
        self.stop()

    def stop(self) -> None:
        """Take the bar off the screen (before a message)."""
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
    from swarmshare.demo import run_demo

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
@click.option(
    "--qr",
    is_flag=True,
    help="Print a QR code of this peer's LAN page address (a phone's camera opens it).",
)
@click.pass_context
def status(ctx: click.Context, as_json: bool, qr: bool) -> None:
    """Show the running daemon's state."""
    with _session(ctx) as session:
        state = session.status()
    if as_json:
        _print_json(state)
        return
    if qr:
        _print_qr(state)
        return
    paths = ", ".join(state["broadcast"])
    if state.get("ipv6"):
        paths += f"; IPv6 multicast on {', '.join(state['ipv6'])}"
    mdns = state.get("mdns") or {}
    out.print(
        f"peer {shown(repr(state['name']))} ({state['peer_id']})"
        f" on {state['address']}:{state['port']}\n"
        f"discovery UDP {state['discovery_port']} -> {paths}\n"
        + (f"mDNS: on, {mdns['sightings']} peer record(s) resolved\n" if mdns.get("on") else "")
        + f"{state['peers']} peer(s) live, sharing {state['items']} item(s), "
        f"served {state['served_chunks']} chunk(s) ({fmt_size(state['served_bytes'])})\n"
        f"web page: swarmshare open (http://127.0.0.1:{state['control_port']}/)\n"
        + (
            f"LAN page for browsers: {state['lan_page']}  (swarmshare status --qr)\n"
            if state.get("lan_page")
            else ""
        )
        + ("peer traffic: TLS (private swarm)\n" if state.get("tls") else "")
        + (
            f"refused {state['refused_certificates']} connection(s) to a peer whose TLS"
            " certificate was not the one it announced (a relay?)\n"
            if state.get("refused_certificates")
            else ""
        )
        + f"certificate compare code: {state['compare_code']}",
        markup=False,
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
    if state.get("localsend"):
        ls = state["localsend"]
        out.print(
            f"LocalSend: HTTPS {ls['port']}, accept {ls['accept']}, {ls['offers']} offer(s)"
            f" waiting (swarmshare inbox), {ls['received_files']} file(s) received,"
            f" {len(ls['devices'])} device(s) seen",
            markup=False,
        )
    if state.get("bittorrent"):
        bt = state["bittorrent"]
        out.print(
            f"BitTorrent: port {bt['port']}, seeding {bt['seeding']} content(s)"
            + (", DHT on" if bt["dht"] else ""),
            markup=False,
        )


def _print_qr(state: dict[str, Any]) -> None:
    """The LAN page's address as a QR code, or one line saying why there is none."""
    url = state.get("lan_page")
    if not url:
        why = (
            "a private swarm has no LAN page"
            if state.get("private")
            else "no daemon serves one (start: swarmshare run)"
        )
        raise UsageError(f"no LAN page to show: {why}")
    from swarmshare.app.qr import qr_text

    out.print(qr_text(url), markup=False, highlight=False, soft_wrap=True)
    out.print(f"{url}\ncertificate compare code: {state['compare_code']}", markup=False)


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
    with _session(ctx) as session:
        rows = session.log(limit)
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
    if _printed_json_or_nothing(rows, as_json, "no transfers yet"):
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


@main.command(name="downloads")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def downloads_command(ctx: click.Context, as_json: bool) -> None:
    """List downloads: running, paused (part file kept), failed, and finished ones."""
    with _session(ctx) as session:
        found = session.downloads()
    if _printed_json_or_nothing(found, as_json, "no downloads"):
        return
    grid = table(("ID", "NAME", "STATE", "DONE", "DEST"))
    for d in found:
        share = f"{d['done_bytes'] * 100 // max(1, d['total_bytes'])}%" if d["total_bytes"] else ""
        state = d["state"] + (f" ({d['error']})" if d["error"] and d["state"] != "done" else "")
        add_row(grid, str(d["id"])[:12], str(d["name"]), state, share, str(d["dest"]))
    out.print(grid)


def _download_action(
    ctx: click.Context, action: str, ref: str, wait: float | None = None
) -> dict[str, Any]:
    with _session(ctx) as session:
        if action == "pause":
            with _no_interrupts():
                return session.pause(ref)
        if action == "resume":
            stats = session.resume(ref, wait)
            if not session.daemon:  # no daemon to carry on: follow it here
                view = DownloadView(enabled=err.is_terminal)
                with view:
                    return _follow_started(session, view, stats)
            return stats
        return session.cancel(ref)


@main.command()
@click.argument("ref")
@click.pass_context
def pause(ctx: click.Context, ref: str) -> None:
    """Pause a download (by ID prefix); its part file is kept for resume."""
    d = _download_action(ctx, "pause", ref)
    out.print(f"paused  {str(d['id'])[:12]}  {d['name']}  ({d['state']})", markup=False)


@main.command()
@click.argument("ref")
@click.option(
    "--wait",
    type=click.FloatRange(0, 3600),
    default=None,
    help="Pause again after this many seconds with no holder (default: wait on).",
)
@click.pass_context
def resume(ctx: click.Context, ref: str, wait: float | None) -> None:
    """Resume a paused or failed download (by ID prefix)."""
    d = _download_action(ctx, "resume", ref, wait)
    out.print(f"{d['state']}  {str(d['id'])[:12]}  {d['name']}", markup=False)


@main.command()
@click.argument("ref")
@click.pass_context
def cancel(ctx: click.Context, ref: str) -> None:
    """Cancel a download (by ID prefix) and delete its part file."""
    d = _download_action(ctx, "cancel", ref)
    out.print(f"cancelled  {str(d['id'])[:12]}  {d['name']}", markup=False)


@main.group(cls=SwarmshareGroup, invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def inbox(ctx: click.Context, as_json: bool) -> None:
    """LocalSend offers waiting for an answer (a peer run with --localsend --accept ask).

    Answer one with: swarmshare inbox accept ID, or: swarmshare inbox refuse ID."""
    if ctx.invoked_subcommand is not None:
        return
    with _session(ctx) as session:
        offers = session.inbox()
    if _printed_json_or_nothing(offers, as_json, "no offers waiting"):
        return
    grid = table(("ID", "FROM", "ADDRESS", "FILES", "SIZE"))
    for o in offers:
        names = ", ".join(str(f["name"]) for f in o["files"][:3])
        more = f" and {len(o['files']) - 3} more" if len(o["files"]) > 3 else ""
        add_row(grid, o["id"], o["from"], o["address"], names + more, fmt_size(o["size"]))
    out.print(grid)


@inbox.command(name="accept")
@click.argument("offer_id")
@click.pass_context
def inbox_accept(ctx: click.Context, offer_id: str) -> None:
    """Take the files of an offer (they go to the download folder, then are shared)."""
    with _session(ctx) as session:
        o = session.inbox_decide(offer_id, True)
    out.print(f"accepted {o['id']}: {len(o['files'])} file(s) from {o['from']}", markup=False)


@inbox.command(name="refuse")
@click.argument("offer_id")
@click.pass_context
def inbox_refuse(ctx: click.Context, offer_id: str) -> None:
    """Refuse an offer (the sender is told at once)."""
    with _session(ctx) as session:
        o = session.inbox_decide(offer_id, False)
    out.print(f"refused {o['id']}: {len(o['files'])} file(s) from {o['from']}", markup=False)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--to",
    "destinations",
    multiple=True,
    required=True,
    metavar="DEVICE|HOST[:PORT]",
    help="A LocalSend device: its name as it announces itself, or its address (repeatable).",
)
@click.option("--pin", default=None, help="The PIN the device asks for.")
@click.option(
    "--wait",
    type=click.FloatRange(0, 600),
    default=3.0,
    show_default=True,
    help="Seconds to look for devices named by their name.",
)
@click.option("--bind", default="0.0.0.0", show_default=True, help="Local address to send from.")
@click.option("--name", default=None, help="Name shown to the device (default: host name).")
@localsend_options
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.pass_context
def send(
    ctx: click.Context,
    /,
    paths: tuple[Path, ...],
    destinations: tuple[str, ...],
    pin: str | None,
    wait: float,
    bind: str,
    name: str | None,
    as_json: bool,
    **kw: Any,
) -> None:
    """Send files to LocalSend devices (phones, laptops, swarmshare peers run with --localsend),
    over HTTPS with this peer's certificate."""
    from swarmshare.app.localsend import SendEvent, send_files

    settings = replace(_with_localsend(_settings(ctx), kw), bind=bind)
    if name:
        settings = replace(settings, name=name)
    bars: dict[str, Any] = {}

    def report(event: SendEvent) -> None:
        if as_json:
            return
        if event.kind == "target" and event.swarm:
            line = f"{event.target} fetches {event.files} file(s), {fmt_size(event.size)}"
            err.print(f"{line} through the swarm (from here and the other receivers)", markup=False)
        elif event.kind == "target":
            err.print(
                f"sending {event.files} file(s), {fmt_size(event.size)} to {event.target}",
                markup=False,
            )
            if err.is_terminal:
                progress = _progress_bar(event.target, transient=True)
                bars[event.target] = (progress, progress.add_task("", total=event.size))
                progress.start()
        elif event.kind == "progress" and event.target in bars:
            progress, task = bars[event.target]
            progress.advance(task, event.sent)
        elif event.kind == "done" and event.target in bars:
            bars.pop(event.target)[0].stop()

    session = open_session(settings)
    if not session.daemon:
        session.close()

    def share(files: list[Path]) -> list[dict[str, Any]]:
        return session.share([str(f) for f in files], None)

    import asyncio

    try:
        results = asyncio.run(
            send_files(
                settings,
                list(paths),
                list(destinations),
                pin,
                wait,
                report,
                share if session.daemon else None,
            )
        )
    finally:
        for progress, _task in bars.values():
            progress.stop()
        if session.daemon:
            session.close()
    if as_json:
        _print_json(results)
    failed = False
    for r in results:
        if as_json:
            failed = failed or r["status"] not in (200, 204)
        elif r["status"] == 200 and r.get("swarm"):
            got = f"{r['to']} has {r['files']} file(s), {fmt_size(r['sent'])} (through the swarm)"
            out.print(got, markup=False)
        elif r["status"] == 200:
            sent = f"sent {r['files']} file(s), {fmt_size(r['sent'])} to {r['to']}"
            out.print(sent, markup=False)
        elif r["status"] == 204:
            out.print(f"{r['error']} (it has them, or wants nothing)", markup=False)
        else:
            failed = True
            err.print(error_line(r["error"]))
    if failed:
        sys.exit(1)


@main.group(cls=SwarmshareGroup)
def service() -> None:
    """Run the peer as a systemd user service: started at login (or at boot, with linger),
    restarted on failure. Its settings come from the config file."""


def _service_argv(ctx: click.Context) -> list[str]:
    """This installation's `swarmshare --home HOME [--config FILE] run`."""
    home = Path(ctx.meta.get(_HOME) or default_home()).expanduser().resolve()
    named = ctx.meta.get(_CONFIG)
    config = Path(named).expanduser().resolve() if named is not None else default_config_file()
    argv = [sys.executable, "-m", "swarmshare", "--home", str(home)]
    if named is not None or config.exists():
        load_config(config, required=True)  # a bad file stops here, not in the service
        argv += ["--config", str(config)]
    return [*argv, "run"]


@service.command(name="install")
@click.option("--print", "print_only", is_flag=True, help="Print the unit file; change nothing.")
@click.pass_context
def service_install(ctx: click.Context, print_only: bool) -> None:
    """Write the user unit swarmshare.service, enable and start it."""
    from swarmshare import service as systemd

    argv = _service_argv(ctx)
    if print_only:
        click.echo(systemd.unit_text(argv), nl=False)
        return
    missing = systemd.systemd_missing()
    if missing is not None:
        raise UsageError(
            f"{missing}: nothing installed; `swarmshare service install --print` prints the"
            f" unit to install by hand (as {systemd.unit_path()})"
        )
    for line in systemd.install(argv):
        out.print(line, markup=False)
    if systemd.lingers() is not True:
        out.print(systemd.linger_hint(), markup=False)


@service.command(name="uninstall")
def service_uninstall() -> None:
    """Stop and disable the service, and remove its unit file."""
    from swarmshare import service as systemd

    for line in systemd.uninstall():
        out.print(line, markup=False)


@service.command(name="status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def service_status(as_json: bool) -> None:
    """Whether the service is installed, enabled and running, and whether it starts at boot."""
    from swarmshare import service as systemd

    found = systemd.state()
    if as_json:
        _print_json(found)
        return
    out.print(
        f"unit: {found['unit']} ({'installed' if found['installed'] else 'not installed'})",
        markup=False,
    )
    if found["systemd"] != "available":
        out.print(str(found["systemd"]), markup=False)
    else:
        out.print(f"enabled: {found['enabled']}, active: {found['active']}", markup=False)
    if found["linger"] is not True:
        out.print(systemd.linger_hint(), markup=False)
    else:
        out.print("linger is on: it starts at boot without a login", markup=False)


@main.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script for bash, zsh or fish (see the README to install it)."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None
    script = cls(main, {}, "swarmshare", "_SWARMSHARE_COMPLETE").source()
    click.echo(script)


@main.command()
@finding_options(BIND_TO_ASK)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PEER_PORT,
    show_default=True,
    help="TCP port of the peer server to check.",
)
@click.option(
    "--bittorrent", is_flag=True, help="Also check the BitTorrent port (run --bittorrent)."
)
@click.option(
    "--bittorrent-port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_BITTORRENT_PORT,
    show_default=True,
    help="TCP/UDP port of the BitTorrent peer to check (with --bittorrent).",
)
@click.option(
    "--wait",
    type=click.FloatRange(0.1, 60),
    default=3.0,
    show_default=True,
    help="Seconds to wait for answers to the solicit.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.pass_context
def doctor(ctx: click.Context, /, port: int, wait: float, as_json: bool, **kw: Any) -> None:
    """Check why peers may not find each other: interfaces, ports, firewall, broadcast, peers'
    HTTP ports, clocks; each finding with what to do. Exit code 1 when a problem is found."""
    from swarmshare.app.doctor import PROBLEM, diagnose

    settings = replace(
        _with_discovery(_settings(ctx), kw),
        port=port,
        bittorrent=kw.pop("bittorrent"),
        bittorrent_port=kw.pop("bittorrent_port"),
    )
    running = ControlClient.find(settings.home) is not None
    findings = diagnose(settings, wait, running)
    if as_json:
        _print_json([f.as_json() for f in findings])
    else:
        for f in findings:
            out.print(f"{f.level}: {f.check}: {f.message}", markup=False)
            if f.remedy and f.level != "ok":
                out.print(f"    fix: {f.remedy}", markup=False)
    if any(f.level == PROBLEM for f in findings):
        sys.exit(1)
