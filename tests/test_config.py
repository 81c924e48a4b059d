"""The config file: every `run` option in TOML, under the command line, each bad value one line
naming the file, the line and the key; `swarmshare config` says where each setting came from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from swarmshare.config import KEYS, load_config
from swarmshare.errors import UsageError

from conftest import Swarm
from helpers import assert_one_line_error

GOOD = """\
# a peer on the lab bench
name = "lab-7"
port = 6001

peers = ["10.0.0.2", "fileserver:5002"]
upload-limit = "10M"
secret-file = "secret.txt"
legacy = false
"""


def swarmshare(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SWARMSHARE_HOME", "SWARMSHARE_CONFIG", "SWARMSHARE_SECRET")
    }
    return subprocess.run(
        [sys.executable, "-m", "swarmshare", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**environ, "COLUMNS": "200", **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def test_a_good_file_gives_typed_values_and_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(GOOD)
    config = load_config(path, required=True)
    assert config.values == {
        "name": "lab-7",
        "port": 6001,
        "peers": ("10.0.0.2", "fileserver:5002"),
        "upload_limit": 10 << 20,
        "secret_file": tmp_path / "secret.txt",
        "legacy": False,
    }
    assert config.lines == {
        "name": 2,
        "port": 3,
        "peers": 5,
        "upload_limit": 6,
        "secret_file": 7,
        "legacy": 8,
    }
    assert config.where("peers") == f"file {path}:5"


def test_a_missing_default_file_is_empty_and_a_named_one_is_an_error(tmp_path: Path) -> None:
    assert load_config(tmp_path / "none.toml", required=False).values == {}
    with pytest.raises(UsageError, match="does not exist"):
        load_config(tmp_path / "none.toml", required=True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name = "x"\nprot = 5\n', "line 2: unknown key 'prot' (did you mean 'port'?)"),
        ('name = "x"\ndiscovery_port = 5\n', "line 2: unknown key 'discovery_port' (did you mean"),
        ('\n\nport = "abc"\n', "line 3: port: must be a whole number from 0 to 65535, not 'abc'"),
        ("port = 70000\n", "line 1: port: must be a whole number from 0 to 65535"),
        ('interval = "often"\n', "line 1: interval: must be a number of seconds"),
        ('peers = ["a:99999"]\n', "line 1: peers: a:99999: the port must be a number"),
        ("legacy = 1\n", "line 1: legacy: must be true or false"),
        ('upload-limit = "fast"\n', "line 1: upload-limit: 'fast' is not a rate"),
        ('name = "x"\nport = \n', "line 2: not valid TOML"),
        ('name = "x"\n[run]\nport = 1\n', "line 2: unknown key 'run'"),
    ],
)
def test_a_bad_file_is_one_line_naming_file_line_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(UsageError) as caught:
        load_config(path, required=True)
    assert str(caught.value).startswith(f"config file {path}, ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_config_shows_each_setting_and_where_it_came_from(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(GOOD)
    (tmp_path / "secret.txt").write_text("a long enough secret\n")
    proc = swarmshare(
        tmp_path / "home",
        "config",
        "--json",
        "--port",
        "7000",
        env={"SWARMSHARE_CONFIG": str(config)},
    )
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["config_file"] == str(config) and shown["config_file_source"] == "environment"
    settings = shown["settings"]
    assert set(KEYS) <= set(settings)
    assert settings["port"] == {"value": 7000, "source": "command line"}
    assert settings["name"] == {"value": "lab-7", "source": f"file {config}:2"}
    assert settings["peers"]["source"] == f"file {config}:5"
    assert settings["upload-limit"] == {"value": 10 << 20, "source": f"file {config}:6"}
    assert settings["discovery-port"] == {"value": 5001, "source": "default"}
    assert settings["home"] == {"value": str(tmp_path / "home"), "source": "command line"}
    table = swarmshare(tmp_path / "home", "config", "--config", str(config), "--name", "cli")
    assert table.returncode == 0, table.stderr
    lines = {line.split()[0]: line for line in table.stdout.splitlines()[2:]}
    assert lines["name"].split()[1:] == ["cli", "command", "line"]
    assert lines["port"].split()[1:] == ["6001", "file", f"{config}:3"]


def test_the_environment_secret_wins_over_the_files_secret_file(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('secret-file = "missing.txt"\n')
    proc = swarmshare(
        tmp_path / "home",
        "config",
        "--json",
        "--config",
        str(config),
        env={"SWARMSHARE_SECRET": "from the environment"},
    )
    assert proc.returncode == 0, proc.stderr
    settings = json.loads(proc.stdout)["settings"]
    assert settings["secret"]["source"] == "environment"
    assert settings["secret-file"] == {"value": None, "source": "default"}


def test_a_bad_file_stops_run_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('name = "x"\nprot = 5\n')
    proc = swarmshare(tmp_path / "home", "run", "--config", str(config))
    assert_one_line_error(proc, f"config file {config}, line 2: unknown key 'prot'")
    missing = swarmshare(tmp_path / "home", "--config", str(tmp_path / "nope.toml"), "ls")
    assert_one_line_error(missing, "nope.toml does not exist")


def test_run_takes_its_settings_from_the_file_under_the_command_line(
    swarm: Swarm, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('name = "from-file"\nsecret-file = "secret.txt"\ninterval = 9\n')
    (tmp_path / "secret.txt").write_text("a long enough secret\n")
    peer = swarm.start(2, "--config", str(config))  # gives --name and --interval itself
    status = peer.json("status")
    assert status["private"] is True  # the file's secret-file
    assert status["name"] == "peer2" and status["interval"] == 30.0  # the command line's


def test_the_discovery_paths_are_keys_too(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("mdns = false\nipv6 = false\n")
    proc = swarmshare(tmp_path / "home", "config", "--json", "--config", str(config), "--ipv6")
    assert proc.returncode == 0, proc.stderr
    settings = json.loads(proc.stdout)["settings"]
    assert settings["mdns"] == {"value": False, "source": f"file {config}:1"}
    assert settings["ipv6"] == {"value": True, "source": "command line"}
    config.write_text('ipv6 = true\nmdns = "no"\n')
    proc = swarmshare(tmp_path / "home", "run", "--config", str(config))
    assert_one_line_error(proc, f"config file {config}, line 2: mdns: must be true or false")
