#!/usr/bin/env bash
# build.sh FLAVOR: build the embervm kernel (vmlinux + bzImage) from Debian's
# linux-source-6.1, tinyconfig plus the flavor's fragments.
#   guest     guest.config                  (the microVM guest)
#   testhost  guest.config testhost.config  (the nested-KVM test host)
# Outputs are cached in $EMBERVM_CACHE_DIR/kernel/FLAVOR-HASH, keyed by the
# source package version, the fragments, any patches/ and this script; the
# path of the output directory is the last line printed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../common.sh"

flavor=${1:-guest}
case $flavor in
guest) fragments=("$here/guest.config") ;;
testhost) fragments=("$here/guest.config" "$here/testhost.config") ;;
*) die "unknown kernel flavor '$flavor' (guest or testhost)" ;;
esac

pkg=linux-source-6.1
tarball=/usr/src/$pkg.tar.xz
srcver=$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null) ||
    die "$pkg is not installed: run 'make deps' or 'apt-get install $pkg'"
[ -r "$tarball" ] || die "$tarball missing: reinstall it with 'apt-get install --reinstall $pkg'"
for tool in flex:flex bison:bison bc:bc gcc:gcc make:make; do
    need "${tool%%:*}" "${tool##*:}"
done
[ -e /usr/include/libelf.h ] || die "libelf headers missing: apt-get install libelf-dev"

key=$({
    echo "$pkg $srcver"
    cat "${fragments[@]}" "$0"
    if [ -d "$here/patches" ]; then cat "$here"/patches/*.patch 2>/dev/null || true; fi
} | sha256sum | cut -c1-16)
out=$EMBERVM_CACHE_DIR/kernel/$flavor-$key

if [ -s "$out/vmlinux" ] && [ -s "$out/bzImage" ]; then
    echo "kernel: $flavor cached (key $key)" >&2
    echo "$out"
    exit 0
fi

start=$(now_s)
src=$EMBERVM_CACHE_DIR/src/linux-$srcver
if [ ! -f "$src/Makefile" ]; then
    echo "kernel: unpacking $tarball" >&2
    mkdir -p "$EMBERVM_CACHE_DIR/src"
    tmp=$(mktemp -d "$EMBERVM_CACHE_DIR/src/.unpack.XXXXXX")
    tar -C "$tmp" -xf "$tarball"
    if [ -d "$here/patches" ]; then
        for p in "$here"/patches/*.patch; do
            [ -e "$p" ] && patch -d "$tmp/$pkg" -p1 <"$p"
        done
    fi
    rm -rf "$src"
    mv "$tmp/$pkg" "$src"
    rm -rf "$tmp"
fi

build=$EMBERVM_CACHE_DIR/build/$flavor-$key
mkdir -p "$build"
mk() { make -s -C "$src" O="$build" ARCH=x86_64 "$@"; }
echo "kernel: configuring $flavor (tinyconfig + ${fragments[*]##*/})" >&2
mk tinyconfig >/dev/null
"$src/scripts/kconfig/merge_config.sh" -m -O "$build" "$build/.config" "${fragments[@]}" >/dev/null
mk olddefconfig >/dev/null
"$here/check-config.sh" "$build/.config" "${fragments[@]}" >&2 ||
    die "the kernel config lost fragment lines (see above)"

mkdir -p "$EMBERVM_CACHE_DIR/kernel"
cp "$build/.config" "$EMBERVM_CACHE_DIR/kernel/.config-$flavor-$key"
echo "kernel: building $flavor with -j$(nproc)" >&2
if ! mk -j"$(nproc)" vmlinux bzImage >&2; then
    # A tree left behind by an interrupted build can hold half-written
    # objects: start once more from a clean tree before giving up.
    echo "kernel: build failed; retrying from a clean tree" >&2
    rm -rf "$build"
    mkdir -p "$build"
    cp "$EMBERVM_CACHE_DIR/kernel/.config-$flavor-$key" "$build/.config"
    mk olddefconfig >/dev/null
    mk -j"$(nproc)" vmlinux bzImage >&2 || die "kernel build failed (see above)"
fi

tmp=$(mktemp -d "$EMBERVM_CACHE_DIR/kernel/.$flavor.XXXXXX")
cp "$build/vmlinux" "$tmp/vmlinux"
cp "$build/arch/x86/boot/bzImage" "$tmp/bzImage"
cp "$build/.config" "$tmp/config"
rm -rf "$out"
mv -T "$tmp" "$out"
rm -f "$EMBERVM_CACHE_DIR/kernel/.config-$flavor-$key"
# Keep only this flavor's newest build tree (for quick relinks).
for old in "$EMBERVM_CACHE_DIR/build/$flavor"-*; do
    [ "$old" = "$build" ] || rm -rf "$old"
done
echo "kernel: $flavor built in $(elapsed "$start") s (key $key)" >&2
echo "$out"
