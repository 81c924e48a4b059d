# Shared by scripts/demo and scripts/check (sourced, not run): find the Pythons, make one
# virtual environment per Python under .venvs/ and install this project into it.
#
# Why virtual environments: Debian's and Ubuntu's own python3 is "externally managed" (PEP 668),
# so `pip install` into it is refused. A virtual environment made from it is ours to install
# into, needs no root, and is reused on later runs while pyproject.toml is unchanged.
# Nothing here relies on PATH finding a virtual environment's bin/: every tool is started as
# `VENV/bin/python -m TOOL`, so `sudo scripts/check` (sudo resets PATH) works too.

ROOT=$(pwd)
VENVS="$ROOT/.venvs"
# Extra Python versions the suite also runs on when they are installed.
EXTRA_VERSIONS="3.13"

say() { echo "== $*"; }
fail() {
    echo "error: $*" >&2
    exit 1
}

is_root() { [ "$(id -u)" = 0 ]; }

# apt_install PACKAGE WHY: install a Debian/Ubuntu package without questions (root only),
# saying what and why on one line. Returns non-zero when it cannot.
apt_install() {
    local package=$1 why=$2 log
    is_root && command -v apt-get >/dev/null || return 1
    say "installing the Debian package $package: $why"
    log=$(mktemp)
    local apt=(apt-get -y -qq -o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0)
    if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" install "$package" </dev/null >"$log" 2>&1; then
        # A fresh machine may have no package lists yet.
        if ! { DEBIAN_FRONTEND=noninteractive "${apt[@]}" update </dev/null >"$log" 2>&1 &&
            DEBIAN_FRONTEND=noninteractive "${apt[@]}" install "$package" </dev/null >"$log" 2>&1; }; then
            echo "   could not install $package; apt-get said:" >&2
            tail -n 5 "$log" | sed 's/^/   /' >&2
            rm -f "$log"
            return 1
        fi
    fi
    rm -f "$log"
}

# python_version PY: prints X.Y, or fails quietly when PY does not run (e.g. a pyenv shim for a
# version that is installed but not selected).
python_version() {
    "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null
}

# primary_python: the Python the demo and the main check run use. The distribution's own
# /usr/bin/python3 where it is externally managed (what a fresh Debian or Ubuntu has, and the
# case pip refuses), otherwise the first python3 on PATH.
primary_python() {
    local marker='import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'
    if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c "$marker" 2>/dev/null; then
        echo /usr/bin/python3
    elif command -v python3 >/dev/null && python_version python3 >/dev/null; then
        command -v python3
    else
        fail "no python3 found: install it (Debian/Ubuntu: sudo apt-get install python3 python3-venv)"
    fi
}

# find_python X.Y: prints a working pythonX.Y: on PATH, in /usr/local/bin or /usr/bin, or one
# that pyenv installed (found even when PATH has no pyenv, as under sudo). Fails quietly.
find_python() {
    local version=$1 candidate homes=() home
    homes+=("${PYENV_ROOT:-$HOME/.pyenv}")
    if [ -n "${SUDO_USER:-}" ]; then
        home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
        [ -n "$home" ] && homes+=("$home/.pyenv")
    fi
    for candidate in "$(command -v "python$version" || true)" "/usr/local/bin/python$version" \
        "/usr/bin/python$version" \
        $(for home in "${homes[@]}"; do ls -d "$home/versions/$version"* 2>/dev/null; done |
            sort -rV | sed "s|\$|/bin/python$version|"); do
        if [ -n "$candidate" ] && [ -x "$candidate" ] &&
            [ "$(python_version "$candidate")" = "$version" ]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

# ensure_venv_module PY: PY must be able to make a virtual environment with pip in it. Debian
# and Ubuntu ship that part separately (python3-venv): as root, install it; otherwise say how.
ensure_venv_module() {
    local py=$1
    "$py" -c 'import ensurepip, venv' 2>/dev/null && return 0
    if [ "$py" = /usr/bin/python3 ] &&
        apt_install python3-venv "$py needs it to make the virtual environments in .venvs/" &&
        "$py" -c 'import ensurepip, venv' 2>/dev/null; then
        return 0
    fi
    fail "$py cannot make a virtual environment (no venv/ensurepip module). On Debian or Ubuntu: sudo apt-get install python3-venv"
}

# venv_for PY NAME EXTRAS: make (or reuse) .venvs/NAME from PY with this project installed in
# editable mode with EXTRAS ("" or "dev"); sets VENV_PY to the virtual environment's python.
# A stamp records the base Python, the extras and pyproject.toml's hash: a rerun with the same
# three installs nothing; a venv with "dev" also serves "" (the demo reuses the check's venv).
venv_for() {
    local py=$1 name=$2 extras=$3 dir base want have spec
    dir="$VENVS/$name"
    base=$("$py" -c 'import os, sys; print(os.path.realpath(sys.executable))')
    want="$base $(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
    have=$(cat "$dir/.stamp" 2>/dev/null || true)
    if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c '' 2>/dev/null; then
        case "$have" in
        "$want dev" | "$want $extras") VENV_PY="$dir/bin/python"; return 0 ;;
        esac
        case "$have" in
        "$base "*) ;;                       # same base Python: install into the venv again
        *) rm -rf "$dir" ;;                 # another Python, or made by hand: start afresh
        esac
    else
        rm -rf "$dir"
    fi
    spec=.
    [ -n "$extras" ] && spec=".[$extras]"
    if [ ! -d "$dir" ]; then
        ensure_venv_module "$py"
        say "making the virtual environment .venvs/$name from $py"
        "$py" -m venv "$dir" || fail "could not make .venvs/$name with $py"
    fi
    say "installing swarmshare ($spec, editable) and its dependencies into .venvs/$name"
    PIP_NO_INPUT=1 "$dir/bin/python" -m pip install -q --disable-pip-version-check -e "$spec" \
        </dev/null || fail "could not install $spec into .venvs/$name (see pip's message above)"
    echo "$want $extras" >"$dir/.stamp"
    VENV_PY="$dir/bin/python"
}

# give_back_to_sudo_user: under sudo, files this run created in the tree (venvs, caches) belong
# to root; hand them back so the user's own runs can still write there.
give_back_to_sudo_user() {
    if is_root && [ -n "${SUDO_UID:-}" ] && [ "$SUDO_UID" != 0 ] &&
        [ "$(stat -c %u "$ROOT")" = "$SUDO_UID" ]; then
        find "$ROOT" -path "$ROOT/.git" -prune -o -user 0 -print0 |
            xargs -0 -r chown -h "$SUDO_UID:${SUDO_GID:-$SUDO_UID}"
    fi
}
