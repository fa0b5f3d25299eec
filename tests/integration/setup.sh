#!/usr/bin/env bash
# Install what the integration tier (tests/integration) needs, once; later runs take seconds.
#
#   - MariaDB server + client from Debian (mariadbd, mariadb-install-db, mariadb): Glance's
#     concurrent tag writes need a real database; SQLite serializes them and hides the race.
#   - A virtualenv for the OpenStack servers, SEPARATE from bulktag's .venv: Glance and Keystone
#     pin a large dependency set (oslo.*, SQLAlchemy, WebOb, ...) that must not leak into the
#     environment bulktag is tested in.
#
# Idempotent: each step checks first and does nothing when its result is already there.
# The venv is keyed by a stamp of the pinned requirements, so changing a pin rebuilds it.
set -euo pipefail

VENV="${BULKTAG_OPENSTACK_VENV:-$HOME/.cache/bulktag/openstack-venv}"
PYTHON="${BULKTAG_OPENSTACK_PYTHON:-python3}"

# Pinned to the majors issue 4 was verified with; the minor/patch float within them.
REQUIREMENTS=(
    "glance>=33,<34"
    "keystone>=30,<31"
    "keystonemiddleware>=13,<14"
    "gunicorn>=23"
    "PyMySQL>=1.1"
)

log() { printf 'setup.sh: %s\n' "$*" >&2; }

ensure_mariadb() {
    if command -v mariadbd >/dev/null && command -v mariadb-install-db >/dev/null \
        && command -v mariadb >/dev/null; then
        return
    fi
    log "installing MariaDB from Debian"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    # --no-install-recommends keeps it to the server binaries; we never start the system
    # service (the fixtures run their own mariadbd on a private socket and datadir).
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        mariadb-server-core mariadb-client-core >/dev/null
}

ensure_venv() {
    local stamp="$VENV/.bulktag-requirements"
    local want
    want="$(printf '%s\n' "${REQUIREMENTS[@]}")"
    if [ -x "$VENV/bin/gunicorn" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return
    fi
    log "building the OpenStack server venv in $VENV"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${REQUIREMENTS[@]}"
    # Written last: a half-built venv (interrupted pip) has no stamp and is rebuilt next time.
    printf '%s\n' "$want" >"$stamp"
}

ensure_mariadb
ensure_venv
log "ready: OpenStack venv $VENV"
