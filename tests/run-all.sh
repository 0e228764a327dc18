#!/usr/bin/env bash
# run-all.sh: every test of the project, in one process tree, so that on a
# machine without hardware KVM the test host starts once for all of them
# (make test runs this through tests/kvm-host/run).
#
# Tests that boot a Linux guest need a working nested KVM. Where the test
# host's probe could not boot one (EMBERVM_NESTED_LINUX=unavailable, see
# tests/kvm-host/run), they cannot run at all: this script says so loudly,
# by name, and runs everything else.
set -euo pipefail
cd "$(dirname "$0")/.."

linux_guest_tests=(qemu_guest_boot boot_linux vsock_device sandbox_exec sandbox_wedged snapshot_clones)

if [ "${EMBERVM_NESTED_LINUX:-}" != unavailable ]; then
    exec cargo test --workspace --frozen --no-fail-fast
fi

echo "run-all: SKIPPED (nested KVM here cannot boot a Linux guest): ${linux_guest_tests[*]}" >&2
other=()
for f in tests/tests/*.rs; do
    name=$(basename "$f" .rs)
    case " ${linux_guest_tests[*]} " in *" $name "*) continue ;; esac
    other+=(--test "$name")
done
cargo test --workspace --frozen --no-fail-fast --exclude embervm-tests
cargo test --frozen --no-fail-fast -p embervm-tests "${other[@]}"
echo "run-all: SKIPPED (nested KVM here cannot boot a Linux guest): ${linux_guest_tests[*]}" >&2
