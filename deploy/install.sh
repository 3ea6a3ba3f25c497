#!/usr/bin/env bash
# Install the actionloop decoder as a systemd service on a rig (run as root from the repository):
#
#   sudo deploy/install.sh                 # install into /opt/actionloop, do not start
#   sudo PREFIX=/srv/actionloop deploy/install.sh
#   DRY_RUN=1 deploy/install.sh            # print what would be done, change nothing
#   DESTDIR=/tmp/stage deploy/install.sh   # everything under /tmp/stage (tests, packaging): no
#                                          # user, no systemctl, root not needed
#
# Creates the `actionloop` system user, a virtualenv with the project in PREFIX, the config
# /etc/actionloop/decoder.toml (kept if it exists: an edited config is never overwritten), and
# the unit /etc/systemd/system/actionloop-decoder.service pointing at the virtualenv, checked
# with `systemd-analyze verify` first where that is installed. Then:
#   1. put a model bundle at /var/lib/actionloop/models/current (or set model.bundle),
#   2. systemctl enable --now actionloop-decoder
#
# With DESTDIR every file goes under DESTDIR (the virtualenv to DESTDIR/PREFIX; the unit still
# names PREFIX, where it will run). A virtualenv is not relocatable: a staged one runs from
# DESTDIR/PREFIX only, which is what the tests do with it.
set -euo pipefail

PREFIX="${PREFIX:-/opt/actionloop}"
DESTDIR="${DESTDIR:-}"
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

case "$PREFIX" in
    /*) ;;
    *) echo "install.sh: PREFIX must be an absolute path, got '$PREFIX'" >&2; exit 1 ;;
esac
if [[ -n "$DESTDIR" ]]; then
    DESTDIR="$(mkdir -p "$DESTDIR" && cd "$DESTDIR" && pwd)"
fi
if [[ "$DRY_RUN" != 1 && -z "$DESTDIR" && "$(id -u)" != 0 ]]; then
    echo "install.sh: run as root (or DRY_RUN=1 to see the steps, or DESTDIR=DIR to stage)" >&2
    exit 1
fi
for file in "$REPO/deploy/$UNIT_NAME" "$REPO/deploy/decoder.toml" "$REPO/pyproject.toml"; do
    [[ -f "$file" ]] || { echo "install.sh: missing $file; run from a checkout of actionloop" >&2; exit 1; }
done

VENV="$DESTDIR$PREFIX/venv"

# 1. A system user with no login and no home of its own beyond the state directory.
if [[ -z "$DESTDIR" ]] && ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
    run useradd --system --home-dir /var/lib/actionloop --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
fi

# 2. The project in its own virtualenv (CPU torch first, as the Makefile does; add the gpu extra
#    on a GPU rig: EXTRAS=gpu).
run mkdir -p "$DESTDIR$PREFIX"
run "$PYTHON" -m venv "$VENV"
run "$VENV/bin/python" -m pip install --quiet --upgrade pip
run "$VENV/bin/python" -m pip install --quiet "$TORCH_SPEC"
run "$VENV/bin/python" -m pip install --quiet "$REPO${EXTRAS:+[$EXTRAS]}"
run mkdir -p "$DESTDIR$PREFIX/docs"
run cp "$REPO/docs/daemon.md" "$DESTDIR$PREFIX/docs/daemon.md"

# 3. Configuration: never overwrite one that exists.
run mkdir -p "$DESTDIR$CONFIG_DIR"
if [[ -e "$DESTDIR$CONFIG_DIR/decoder.toml" ]]; then
    echo "keeping existing $DESTDIR$CONFIG_DIR/decoder.toml (the new example is $REPO/deploy/decoder.toml)"
else
    run install -m 0644 "$REPO/deploy/decoder.toml" "$DESTDIR$CONFIG_DIR/decoder.toml"
fi

# 4. The unit, pointed at this virtualenv and checked before systemd sees it. systemd-analyze
#    takes the unit type from the file name, so the copy it checks is named like the unit.
tmp_dir="$(mktemp -d)"
trap 'rm -rf "$tmp_dir"' EXIT
sed -e "s#/opt/actionloop/venv/bin/python#$PREFIX/venv/bin/python#" \
    -e "s#file:///opt/actionloop/docs#file://$PREFIX/docs#" \
    -e "s#--config /etc/actionloop/decoder.toml#--config $CONFIG_DIR/decoder.toml#" \
    -e "s#EnvironmentFile=-/etc/actionloop/decoder.env#EnvironmentFile=-$CONFIG_DIR/decoder.env#" \
    "$REPO/deploy/$UNIT_NAME" > "$tmp_dir/$UNIT_NAME"
if command -v systemd-analyze >/dev/null 2>&1 && [[ "$DRY_RUN" != 1 ]]; then
    # Staged: the interpreter is not at PREFIX yet, so check a copy that names the staged one.
    mkdir "$tmp_dir/verify"
    sed -e "s#$PREFIX/venv/bin/python#$VENV/bin/python#" "$tmp_dir/$UNIT_NAME" > "$tmp_dir/verify/$UNIT_NAME"
    echo "+ systemd-analyze verify $UNIT_NAME"
    if ! output="$(systemd-analyze verify "$tmp_dir/verify/$UNIT_NAME" 2>&1)" || grep -q "$UNIT_NAME" <<<"$output"; then
        echo "install.sh: systemd-analyze verify rejects the unit:" >&2
        echo "$output" >&2
        exit 1
    fi
elif [[ "$DRY_RUN" == 1 ]]; then
    echo "+ systemd-analyze verify $UNIT_NAME (skipped: dry run)"
else
    echo "systemd-analyze is not installed: the unit was not verified"
fi
run mkdir -p "$DESTDIR$UNIT_DIR"
run install -m 0644 "$tmp_dir/$UNIT_NAME" "$DESTDIR$UNIT_DIR/$UNIT_NAME"
# Only a booted systemd can reload; a chroot, a container or a staged install has none.
if [[ -z "$DESTDIR" && -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
    run systemctl daemon-reload
elif [[ -z "$DESTDIR" ]]; then
    echo "systemd is not running here: run 'systemctl daemon-reload' on the rig after this"
fi

cat <<DONE
Installed${DESTDIR:+ under $DESTDIR}. Next:
  - put a model bundle at /var/lib/actionloop/models/current, or set model.bundle in $CONFIG_DIR/decoder.toml
  - systemctl enable --now actionloop-decoder
  - journalctl -u actionloop-decoder -f
  - $PREFIX/venv/bin/actionloop control status
DONE
