#!/usr/bin/env bash
# boot-qemu.sh [--kernel K] [--initrd I] [--memory MiB] [--vcpus N] [-- EXTRA_CMDLINE]:
# boot the guest under QEMU (-accel kvm -M microvm), the stand-in VMM, and
# print its console. The agent reboots after its ready line
# (embervm.action=reboot), which ends QEMU (-no-reboot). Needs a real /dev/kvm:
# run it through tests/kvm-host/run on machines without one.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"

kernel=$EMBERVM_CACHE_DIR/default/vmlinux
initrd=$EMBERVM_CACHE_DIR/default/initramfs.cpio.gz
mem=128 cpus=1 extra=""
while [ $# -gt 0 ]; do
    case $1 in
    --kernel) kernel=$2; shift 2 ;;
    --initrd) initrd=$2; shift 2 ;;
    --memory) mem=$2; shift 2 ;;
    --vcpus) cpus=$2; shift 2 ;;
    --) shift; extra="$*"; break ;;
    *) die "unknown argument '$1'" ;;
    esac
done

[ -e "$kernel" ] || die "kernel $kernel not found: build the guest with 'make guest'"
[ -e "$initrd" ] || die "initramfs $initrd not found: build the guest with 'make guest'"
magic=$(head -c 4 "$kernel" | od -An -tx1 | tr -d ' \n')
hdrs=$(dd if="$kernel" bs=1 skip=514 count=4 2>/dev/null || true)
if [ "$magic" != 7f454c46 ] && [ "$hdrs" != HdrS ]; then
    die "kernel $kernel is corrupt (neither an ELF vmlinux nor a bzImage): rebuild it with 'make guest'"
fi
gzip -t "$initrd" 2>/dev/null || die "initramfs $initrd is corrupt (not gzip): rebuild it with 'make guest'"
kvm=${EMBERVM_DEV_KVM:-/dev/kvm}
[ -e "$kvm" ] || die "$kvm does not exist: load kvm_intel/kvm_amd, or run this through tests/kvm-host/run"
need qemu-system-x86_64 qemu-system-x86

exec qemu-system-x86_64 \
    -M microvm,x-option-roms=off,isa-serial=on,rtc=on,acpi=off \
    -accel kvm -cpu host -m "$mem" -smp "$cpus" \
    -nodefaults -no-user-config -nographic -no-reboot -serial stdio \
    -kernel "$kernel" -initrd "$initrd" \
    -append "console=ttyS0 reboot=t panic=-1 quiet embervm.action=reboot $extra"
