#!/usr/bin/env bash
# build.sh: build a gzip cpio initramfs for the embervm guest, reproducibly
# (sorted entries, mtime 0, owner root).
#
#   build.sh --agent AGENT [--qjs QJS] --out FILE            the default image:
#       busybox (Debian busybox-static), python3.11 (Debian packages),
#       qjs (embervm-js), the agent as /init
#   build.sh --agent AGENT --from DIR|TAR --out FILE         a user's root file
#       system (a directory, or a tar archive such as `docker export` writes)
#       with the agent added as /init
#
# Prints the image's uncompressed and compressed size.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../common.sh"

agent="" qjs="" from="" out=""
while [ $# -gt 0 ]; do
    case $1 in
    --agent) agent=$2; shift 2 ;;
    --qjs) qjs=$2; shift 2 ;;
    --from) from=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) die "unknown argument '$1' (see the header of $0)" ;;
    esac
done
[ -n "$out" ] || die "--out FILE is required"
[ -n "$agent" ] || die "--agent PATH is required (build it with 'make agent')"
[ -f "$agent" ] && [ -r "$agent" ] || die "agent binary '$agent' not found or unreadable: build it with 'make agent'"
need cpio cpio
need gzip gzip

stage=$(mktemp -d "${TMPDIR:-/tmp}/embervm-image.XXXXXX")
trap 'rm -rf "$stage"' EXIT

# copy_libs FILE...: copy the shared libraries the ELF files need (as the
# host's loader resolves them) into the stage, keeping their paths.
copy_libs() {
    local f lib
    for f in "$@"; do
        ldd "$f" 2>/dev/null | awk '/=> \// { print $3 } /^\t\/lib/ { print $1 }'
    done | sort -u | while read -r lib; do
        [ -e "$stage$lib" ] && continue
        mkdir -p "$stage$(dirname "$lib")"
        cp -L "$lib" "$stage$lib"
    done
}

# missing_libs FILE: the libraries FILE needs that the loader cannot find.
missing_libs() { ldd "$1" 2>/dev/null | awk '/not found/ { print $1 }'; }

debs=$EMBERVM_CACHE_DIR/debs
fetch_deb() {
    local pkg=$1 ver file
    ver=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ { print $2 }')
    [ -n "$ver" ] && [ "$ver" != "(none)" ] ||
        die "package $pkg unknown to apt: run 'apt-get update' (or 'make deps')"
    file=$debs/${pkg}_${ver//:/%3a}_amd64.deb
    if [ ! -s "$file" ]; then
        mkdir -p "$debs"
        (cd "$debs" && apt-get download "$pkg=$ver" >/dev/null 2>&1) ||
            die "cannot download $pkg=$ver: check 'apt-get update' and the package mirror"
    fi
    [ -s "$file" ] || file=$(ls "$debs/${pkg}_"*"_amd64.deb" 2>/dev/null | head -n1)
    [ -s "$file" ] || die "downloaded $pkg but cannot find its .deb in $debs"
    echo "$file"
}

if [ -n "$from" ]; then
    if [ -d "$from" ]; then
        [ -r "$from" ] && [ -x "$from" ] ||
            die "cannot read image directory '$from': make it readable (chmod a+rx) or run as its owner"
        (cd "$from" && tar --numeric-owner -cf - .) | tar -C "$stage" --numeric-owner -xf - ||
            die "cannot copy '$from' (unreadable files inside? fix their permissions)"
    elif [ -f "$from" ]; then
        [ -r "$from" ] || die "cannot read '$from': fix its permissions"
        tar -C "$stage" --numeric-owner -xf "$from" 2>/dev/null ||
            die "'$from' is neither a directory nor a tar archive tar can read (docker export gives one)"
    else
        die "image source '$from' does not exist (give a directory or a tar archive)"
    fi
    if [ -e "$stage/init" ] || [ -L "$stage/init" ]; then
        echo "image: the source has its own /init; it is replaced by the agent" >&2
        rm -f "$stage/init"
    fi
else
    need busybox busybox-static
    busybox_bin=/bin/busybox
    file "$busybox_bin" 2>/dev/null | grep -q 'statically linked' ||
        die "$busybox_bin is not the static build: apt-get install busybox-static"
    mkdir -p "$stage/bin" "$stage/usr/bin" "$stage/sbin"
    cp "$busybox_bin" "$stage/bin/busybox"
    for applet in $("$busybox_bin" --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$stage/bin/$applet"
    done
    # python3.11 from Debian's packages, trimmed of what a sandbox never uses.
    for pkg in python3.11-minimal libpython3.11-minimal libpython3.11-stdlib; do
        dpkg-deb -x "$(fetch_deb "$pkg")" "$stage"
    done
    rm -rf "$stage/usr/share" "$stage/usr/lib/python3.11/"{test,idlelib,tkinter,turtledemo,ensurepip,lib2to3,pydoc_data,config-3.11-x86_64-linux-gnu} \
        "$stage/usr/bin/"pydoc* "$stage/etc"
    # Modules for terminals and local databases: no use in a sandbox, and
    # they pull in ~4 MiB of libraries (Berkeley DB, Kerberos via NIS).
    for mod in _tkinter _dbm _gdbm nis _curses _curses_panel readline; do
        rm -f "$stage/usr/lib/python3.11/lib-dynload/$mod".*
    done
    find "$stage/usr/lib/python3.11" -name __pycache__ -prune -exec rm -rf {} +
    ln -sf python3.11 "$stage/usr/bin/python3"
    ln -sf python3.11 "$stage/usr/bin/python"
    # Extension modules whose libraries this host lacks are dropped, loudly.
    for so in "$stage"/usr/lib/python3.11/lib-dynload/*.so; do
        if [ -n "$(missing_libs "$so")" ]; then
            echo "image: dropping $(basename "$so") (needs $(missing_libs "$so" | tr '\n' ' '))" >&2
            rm -f "$so"
        fi
    done
    copy_libs "$stage/usr/bin/python3.11" "$stage"/usr/lib/python3.11/lib-dynload/*.so
    if [ -n "$qjs" ]; then
        [ -f "$qjs" ] || die "qjs binary '$qjs' not found: build it with 'make qjs'"
        cp "$qjs" "$stage/usr/bin/qjs"
        copy_libs "$stage/usr/bin/qjs"
    fi
fi

# What every image gets: the agent as /init, the mount points, the console
# node the kernel opens for init, and the unprivileged user code runs as.
cp "$agent" "$stage/init"
chmod 0755 "$stage/init"
mkdir -p "$stage"/{dev,proc,sys,tmp,run,root,etc,home/user}
[ -e "$stage/dev/console" ] || mknod -m 600 "$stage/dev/console" c 5 1
[ -e "$stage/dev/null" ] || mknod -m 666 "$stage/dev/null" c 1 3
if [ -z "$from" ]; then
    printf 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:sandbox user:/home/user:/bin/sh\n' >"$stage/etc/passwd"
    printf 'root:x:0:\nuser:x:1000:\n' >"$stage/etc/group"
    echo embervm >"$stage/etc/hostname"
fi
chmod 1777 "$stage/tmp"

mkdir -p "$(dirname "$out")"
find "$stage" -exec touch -h -d @0 {} +
tmp_out=$(mktemp "$out.XXXXXX")
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort |
    cpio --quiet -o -H newc -R 0:0 --reproducible) >"$tmp_out.cpio"
raw=$(stat -c %s "$tmp_out.cpio")
gzip -n -6 <"$tmp_out.cpio" >"$tmp_out"
rm -f "$tmp_out.cpio"
mv "$tmp_out" "$out"
gz=$(stat -c %s "$out")
awk -v r="$raw" -v g="$gz" -v o="$out" 'BEGIN {
    printf "image: %s: %.1f MiB uncompressed, %.1f MiB gzip\n", o, r / 1048576, g / 1048576 }' >&2
