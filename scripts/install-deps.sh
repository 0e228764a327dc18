#!/usr/bin/env bash
# install-deps.sh: install the Debian packages embervm's build and tests need,
# only those missing (so a warm machine does no apt work at all).
set -euo pipefail
pkgs=(
    linux-source-6.1 flex bison bc libelf-dev libssl-dev xz-utils  # guest kernel
    busybox-static cpio file                                       # guest image
    qemu-system-x86                                                # test host
)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "error: missing packages: ${missing[*]}: run 'sudo $0' (or apt-get install them)" >&2
    exit 1
fi
echo "deps: installing ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
