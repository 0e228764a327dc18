#!/usr/bin/env bash
# `make demo`: run Python and JavaScript code in embervm sandboxes.
# Runs inside tests/kvm-host/run (directly on hardware KVM).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/embervm
show() {
    printf '\n$ embervm'
    for a in "$@"; do
        if [[ $a =~ ^[A-Za-z0-9_./=-]+$ ]]; then printf ' %s' "$a"; else printf " '%s'" "$a"; fi
    done
    printf '\n'
    "$bin" "$@"
}
show run --language python -c 'import platform, sys; print(6 * 7, "from Python", sys.version.split()[0], "on Linux", platform.release())'
show run --language javascript -c 'console.log([1, 2, 3].map(x => x * x).join(" "), "from QuickJS")'
show exec -- sh -c 'id -un; exit 3' || echo "(exit status $?, as the guest's)"
