#!/usr/bin/env bash
# Install the actionloop decoder as a systemd service on a rig (run as root from the repository):
#
#   sudo deploy/install.sh                 # install into /opt/actionloop, do not start
#   sudo PREFIX=/srv/actionloop deploy/install.sh
#   DRY_RUN=1 deploy/install.sh            # print what would be done, change nothing
#
# Creates the `actionloop` system user, a virtualenv with the project in PREFIX, the config
# /etc/actionloop/decoder.toml (kept if it exists: an edited config is never overwritten), and
# the unit /etc/systemd/system/actionloop-decoder.service pointing at the virtualenv. Then:
#   1. put a model bundle at /var/lib/actionloop/models/current (or set model.bundle),
#   2. systemctl enable --now actionloop-decoder
set -euo pipefail

PREFIX="${PREFIX:-/opt/actionloop}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
SERVICE_USER="${SERVICE_USER:-actionloop}"
UNIT_DIR="${UNIT_DIR:-/etc/systemd/system}"
CONFIG_DIR="${CONFIG_DIR:-/etc/actionloop}"
DRY_RUN="${DRY_RUN:-0}"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
UNIT_NAME="actionloop-decoder.service"

run() {
    echo "+ $*"
    if [[ "$DRY_RUN" != 1 ]]; then
        "$@"
    fi
}

if [[ "$DRY_RUN" != 1 && "$(id -u)" != 0 ]]; then
    echo "install.sh: run as root (or DRY_RUN=1 to see the steps)" >&2
    exit 1
fi
for file in "$REPO/deploy/$UNIT_NAME" "$REPO/deploy/decoder.toml" "$REPO/pyproject.toml"; do
    [[ -f "$file" ]] || { echo "install.sh: missing $file; run from a checkout of actionloop" >&2; exit 1; }
done

# 1. A system user with no login and no home of its own beyond the state directory.
if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
    run useradd --system --home-dir /var/lib/actionloop --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
fi

# 2. The project in its own virtualenv (CPU torch first, as the Makefile does; add the gpu extra
#    on a GPU rig: EXTRAS=gpu).
run mkdir -p "$PREFIX"
run "$PYTHON" -m venv "$PREFIX/venv"
run "$PREFIX/venv/bin/python" -m pip install --quiet --upgrade pip
run "$PREFIX/venv/bin/python" -m pip install --quiet "$TORCH_SPEC"
run "$PREFIX/venv/bin/python" -m pip install --quiet "$REPO${EXTRAS:+[$EXTRAS]}"
run mkdir -p "$PREFIX/docs"
run cp "$REPO/docs/daemon.md" "$PREFIX/docs/daemon.md"

# 3. Configuration: never overwrite one that exists.
run mkdir -p "$CONFIG_DIR"
if [[ -e "$CONFIG_DIR/decoder.toml" ]]; then
    echo "keeping existing $CONFIG_DIR/decoder.toml (the new example is $REPO/deploy/decoder.toml)"
else
    run install -m 0644 "$REPO/deploy/decoder.toml" "$CONFIG_DIR/decoder.toml"
fi

# 4. The unit, pointed at this virtualenv, checked before systemd sees it.
tmp_unit="$(mktemp)"
trap 'rm -f "$tmp_unit"' EXIT
sed -e "s#/opt/actionloop/venv/bin/python#$PREFIX/venv/bin/python#" \
    -e "s#file:///opt/actionloop/docs#file://$PREFIX/docs#" \
    "$REPO/deploy/$UNIT_NAME" > "$tmp_unit"
if command -v systemd-analyze >/dev/null 2>&1 && [[ "$DRY_RUN" != 1 ]]; then
    systemd-analyze verify "$tmp_unit"
fi
run install -m 0644 "$tmp_unit" "$UNIT_DIR/$UNIT_NAME"
if command -v systemctl >/dev/null 2>&1; then
    run systemctl daemon-reload
fi

cat <<DONE
Installed. Next:
  - put a model bundle at /var/lib/actionloop/models/current, or set model.bundle in $CONFIG_DIR/decoder.toml
  - systemctl enable --now actionloop-decoder
  - journalctl -u actionloop-decoder -f
  - $PREFIX/venv/bin/actionloop control status
DONE
