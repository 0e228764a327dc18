#!/usr/bin/env bash
# build.sh: build the default guest and publish it in $EMBERVM_CACHE_DIR/default/
# (vmlinux, bzImage, initramfs.cpio.gz, as symlinks into the keyed caches).
#   1. the static guest binaries (agent, qjs) with cargo
#   2. the kernel (kernel/build.sh guest; cached by input hash)
#   3. the initramfs (image/build.sh; cached by a hash of its inputs)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
. "$here/common.sh"

start=$(now_s)
target=x86_64-unknown-linux-gnu
tdir=$repo/target/guest
echo "guest: building the static agent and qjs" >&2
RUSTFLAGS="-C target-feature=+crt-static -C strip=symbols" \
    cargo build --quiet --release --locked -p embervm-agent -p embervm-js \
    --target "$target" --target-dir "$tdir" >&2
agent=$tdir/$target/release/embervm-agent
qjs=$tdir/$target/release/qjs
for b in "$agent" "$qjs"; do
    file "$b" | grep -qE 'static(-pie)? linked|statically linked' || die "$b is not static"
done

kernel=$("$here/kernel/build.sh" guest)

key=$({
    sha256sum "$agent" "$qjs" "$here/image/build.sh" | cut -d' ' -f1
    dpkg-query -W -f='${Package} ${Version}\n' busybox-static 2>/dev/null
    for p in python3.11-minimal libpython3.11-minimal libpython3.11-stdlib; do
        apt-cache policy "$p" 2>/dev/null | awk -v p="$p" '/Candidate:/ { print p, $2 }'
    done
} | sha256sum | cut -c1-16)
image=$EMBERVM_CACHE_DIR/image/default-$key/initramfs.cpio.gz
if [ -s "$image" ]; then
    echo "image: cached (key $key)" >&2
else
    "$here/image/build.sh" --agent "$agent" --qjs "$qjs" --out "$image"
fi

pub=$EMBERVM_CACHE_DIR/default
mkdir -p "$pub"
ln -sfn "$kernel/vmlinux" "$pub/vmlinux"
ln -sfn "$kernel/bzImage" "$pub/bzImage"
ln -sfn "$image" "$pub/initramfs.cpio.gz"
echo "guest: ready in $pub ($(elapsed "$start") s)" >&2
