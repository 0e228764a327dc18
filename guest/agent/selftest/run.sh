#!/usr/bin/env bash
# guest/agent/selftest/run.sh: boot the default guest kernel and initramfs
# under QEMU (TCG, no KVM needed) with this tree's agent as /init and
# selftest.py beside it, and check the exec path on the real guest kernel:
# user switch, cgroup join, memory.max + OOM report, pids.max, a fork bomb,
# timeout killing a setsid escapee, cpu.max, exec cgroups removed, agent
# still alive. Needs the default guest built (guest/build.sh) and
# qemu-system-x86_64. Exit status 0 only if every check passed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
cache=${EMBERVM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/embervm}
kernel=$cache/default/vmlinux
initrd=$cache/default/initramfs.cpio.gz
[ -e "$kernel" ] && [ -e "$initrd" ] || { echo "no default guest in $cache: run guest/build.sh" >&2; exit 2; }
command -v qemu-system-x86_64 >/dev/null || { echo "qemu-system-x86_64 is missing" >&2; exit 2; }

(cd "$repo" && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release \
    -p embervm-agent --target x86_64-unknown-linux-gnu --target-dir target/guest)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/root"
cp "$repo/target/guest/x86_64-unknown-linux-gnu/release/embervm-agent" "$work/root/init"
cp "$here/selftest.py" "$work/root/selftest.py"
# A second cpio archive appended to the first overrides its files.
(cd "$work/root" && find . | cpio -o -H newc 2>/dev/null | gzip) >"$work/overlay.cpio.gz"
cat "$initrd" "$work/overlay.cpio.gz" >"$work/initrd.gz"

timeout 600 qemu-system-x86_64 \
    -M microvm,x-option-roms=off,isa-serial=on,rtc=on,acpi=off \
    -accel tcg -cpu max -m 512 -smp 2 \
    -nodefaults -no-user-config -nographic -no-reboot -serial stdio \
    -kernel "$kernel" -initrd "$work/initrd.gz" \
    -append "console=ttyS0 reboot=t panic=-1 quiet embervm.action=run embervm.run=/usr/bin/python3,/selftest.py" \
    | tee "$work/console.log" | grep --line-buffered -E "SELFTEST|embervm-agent" || true
grep -q "SELFTEST DONE" "$work/console.log" || { echo "selftest did not finish" >&2; exit 1; }
! grep -q "SELFTEST FAIL" "$work/console.log"
