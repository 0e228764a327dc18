# Shared by the guest build scripts: the cache directory and error helpers.
# shellcheck shell=bash

EMBERVM_CACHE_DIR=${EMBERVM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/embervm}
export EMBERVM_CACHE_DIR

die() {
    echo "error: $*" >&2
    exit 1
}

# need CMD PACKAGE: fail with the install command when CMD is missing.
need() {
    command -v "$1" >/dev/null 2>&1 ||
        die "'$1' not found: install it with 'apt-get install $2' (or run 'make deps')"
}

# Seconds since the epoch with milliseconds, for timing steps.
now_s() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now_s)" 'BEGIN { printf "%.1f", b - a }'; }
