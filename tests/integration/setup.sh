#!/usr/bin/env bash
# Install what the integration tier (tests/integration) needs, once; a second run takes
# milliseconds.
#
#   - MariaDB from Debian (mariadbd, mariadb-install-db, mariadb client): Glance's concurrent
#     tag writes need a real database; SQLite serializes them and hides the lost-update race.
#     Only the binaries: the fixtures run their own mariadbd on a private socket and datadir,
#     never the system service.
#   - A virtualenv for the OpenStack servers, SEPARATE from bulktag's .venv: Glance and
#     Keystone pin a large dependency set (oslo.*, SQLAlchemy, WebOb, eventlet, ...) that must
#     not leak into the environment bulktag is tested in. Installed from the fully pinned
#     openstack-requirements.txt beside this script.
#
# Environment:
#   BULKTAG_OPENSTACK_VENV   where the venv lives [~/.cache/bulktag/openstack-venv]
#   BULKTAG_OPENSTACK_PYTHON interpreter to build it with [python3]
#
# Idempotent: each step checks first. The venv carries a stamp of the requirements file and
# the interpreter version; when either changes the venv is rebuilt, and an interrupted build
# (no stamp) is rebuilt too.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${BULKTAG_OPENSTACK_VENV:-$HOME/.cache/bulktag/openstack-venv}"
PYTHON="${BULKTAG_OPENSTACK_PYTHON:-python3}"
REQUIREMENTS="$HERE/openstack-requirements.txt"

log() { printf 'setup.sh: %s\n' "$*" >&2; }

ensure_mariadb() {
    if command -v mariadbd >/dev/null && command -v mariadb-install-db >/dev/null \
        && command -v mariadb >/dev/null; then
        return
    fi
    log "installing MariaDB from Debian"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    # mariadbd and mariadb-install-db come from -server-core, the client from -client-core.
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        mariadb-server-core mariadb-client-core >/dev/null
}

stamp_of() {
    { "$PYTHON" -c 'import sys; print(sys.version)'; cat "$REQUIREMENTS"; } | sha256sum | cut -d' ' -f1
}

ensure_venv() {
    local stamp want
    stamp="$VENV/.bulktag-stamp"
    want="$(stamp_of)"
    if [ -x "$VENV/bin/gunicorn" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return
    fi
    log "building the OpenStack server venv in $VENV"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
    # Some machines' pip configuration names local package folders that do not exist; pip then
    # warns once per package. Drop that noise, keep every other line (and pip's exit status).
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQUIREMENTS" 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; } >&2
    # Written last: a half-built venv (interrupted pip) has no stamp and is rebuilt next time.
    printf '%s\n' "$want" >"$stamp"
}

ensure_mariadb
ensure_venv
log "ready: MariaDB $(mariadbd --version | awk '{print $3}'), OpenStack venv $VENV"
