#!/usr/bin/env bash
# Install the frozen bundle where the Agent can run it, with the rights the Agent demands.
#
#   sudo packaging/install.sh [--prefix /opt] [--owner dd-agent] [--allow-group-exec]
#                             [--bundle dist/datadog-secret-backend]
#
# Result: PREFIX/datadog-secret-backend/{datadog-secret-backend,_internal/}, owned by OWNER
# (and its primary group), with no rights for group or others anywhere: directories 0700, the
# executable 0500, every other file 0400. With --allow-group-exec (the Agent's
# secret_backend_command_allow_group_exec_perm) the group may read and execute, never write:
# 0750 / 0550 / 0440. A datadog-secret-backend.yaml already next to an installed executable
# is kept. The new copy is prepared beside the old one and swapped in with two renames.
# Prints the datadog.yaml lines to paste, with the executable's SHA-256.
set -euo pipefail

NAME=datadog-secret-backend
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX=/opt
OWNER=dd-agent
GROUP_EXEC=0
BUNDLE="$REPO/dist/$NAME"

usage() {
    sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit "${1:-2}"
}
die() {
    echo "install.sh: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX="${2:?--prefix needs a directory}"; shift 2 ;;
        --owner) OWNER="${2:?--owner needs a user}"; shift 2 ;;
        --bundle) BUNDLE="${2:?--bundle needs a directory}"; shift 2 ;;
        --allow-group-exec) GROUP_EXEC=1; shift ;;
        -h | --help) usage 0 ;;
        *) echo "install.sh: unknown option $1" >&2; usage ;;
    esac
done

[ -x "$BUNDLE/$NAME" ] && [ -d "$BUNDLE/_internal" ] ||
    die "no bundle at $BUNDLE (run 'make binary' first, or pass --bundle DIR)"
id -u "$OWNER" >/dev/null 2>&1 ||
    die "user '$OWNER' does not exist: install the Agent first, or pass --owner USER (root in containers)"
GROUP="$(id -gn "$OWNER")"
case "$PREFIX" in /*) ;; *) PREFIX="$(pwd)/$PREFIX" ;; esac

if [ "$GROUP_EXEC" = 1 ]; then
    DIR_MODE=0750 EXE_MODE=0550 FILE_MODE=0440
else
    DIR_MODE=0700 EXE_MODE=0500 FILE_MODE=0400
fi

TARGET="$PREFIX/$NAME"
NEW="$PREFIX/.$NAME.new.$$"
OLD="$PREFIX/.$NAME.old.$$"
trap 'rm -rf "$NEW" "$OLD"' EXIT

mkdir -p "$PREFIX"
# Nothing readable by others, even while copying.
(umask 077 && cp -R "$BUNDLE" "$NEW")
if [ -f "$TARGET/$NAME.yaml" ]; then
    cp -p "$TARGET/$NAME.yaml" "$NEW/$NAME.yaml"
    echo "kept the multi-backend file $TARGET/$NAME.yaml"
fi
chown -R "$OWNER:$GROUP" "$NEW"
find "$NEW" -type d -exec chmod "$DIR_MODE" {} +
find "$NEW" -type f -exec chmod "$FILE_MODE" {} +
chmod "$EXE_MODE" "$NEW/$NAME"

# Check the copy with the Agent's rules before it replaces anything.
check_args=(check-permissions --owner "$OWNER")
[ "$GROUP_EXEC" = 1 ] && check_args+=(--allow-group-exec)
if ! "$NEW/$NAME" "${check_args[@]}" >/dev/null; then
    "$NEW/$NAME" "${check_args[@]}" >&2 || true
    die "the installed copy fails the Agent's rights check (see above); nothing replaced"
fi

if [ -e "$TARGET" ]; then
    mv "$TARGET" "$OLD"
fi
mv "$NEW" "$TARGET"

EXE="$TARGET/$NAME"
SHA="$(sha256sum "$EXE" | cut -d' ' -f1)"
echo "installed $EXE ($("$EXE" --version), owner $OWNER:$GROUP)"
echo
echo "Add to datadog.yaml (then restart the Agent):"
echo
echo "secret_backend_command: $EXE"
echo "secret_backend_command_sha256: $SHA"
if [ "$GROUP_EXEC" = 1 ]; then
    echo "secret_backend_command_allow_group_exec_perm: true"
fi
echo "# and either secret_backend_type + secret_backend_config, or $TARGET/$NAME.yaml"
echo
echo "Check a configuration with: sudo -u $OWNER $EXE check --datadog-yaml /etc/datadog-agent/datadog.yaml --confd /etc/datadog-agent/conf.d"
