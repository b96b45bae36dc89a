#!/bin/sh
# Puts qemu's ssh block module (block-ssh.so from Debian's qemu-block-extra, the version of
# the installed qemu-utils) into a private directory, so tests can run the real qemu-img with
# its ssh driver: QEMU_MODULE_DIR=DIR/usr/lib/x86_64-linux-gnu/qemu qemu-img ...
# Nothing is installed system-wide: a system-wide qemu-block-extra would change real
# qemu-img's driver list for every other differential test.
#   scripts/fetch-qemu-ssh-module.sh [DIR]    DIR defaults to build/qemu-modules
# Prints the module directory; exit 1 when the package cannot be had (offline).
set -e
dir=${1:-build/qemu-modules}
ver=$(dpkg-query -W -f='${Version}' qemu-utils)
mods=$(readlink -f "$dir")/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)/qemu
stamp="$dir/.version"
if [ -f "$mods/block-ssh.so" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$ver" ]; then
    echo "$mods"
    exit 0
fi
rm -rf "$dir"
mkdir -p "$dir/deb"
# apt-get download writes into the current directory; _apt may not reach it (a note only)
(cd "$dir/deb" && apt-get download -q "qemu-block-extra=$ver" >/dev/null 2>&1) || {
    echo "fetch-qemu-ssh-module: cannot download qemu-block-extra=$ver" >&2
    exit 1
}
dpkg-deb -x "$dir"/deb/qemu-block-extra_*.deb "$dir"
rm -rf "$dir/deb"
echo "$ver" > "$stamp"
echo "$mods"
