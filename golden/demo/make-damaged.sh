#!/bin/sh
# Recipe of golden/demo/damaged.qcow2, the sample `make demo` checks and repairs. Run by hand
# (needs qemu-img and qemu-io 7.2); the image is committed, so the demo itself needs neither.
#
# A 64 KiB qcow2 image with 4 KiB clusters and 12 KiB of guest data, as qemu-img lays it
# out: cluster 0 header, 1 refcount table, 2 refcount block, 3 L1, 4 L2, 5-6 guest 0-8 KiB
# (0x51), 7 guest 32-36 KiB (0x49). Then two pokes a crash or a buggy writer could leave:
#   - the refcount of cluster 6 (guest data) is set to 0: a corruption ("ERROR cluster 6
#     refcount=0 reference=1"; the data cluster could be handed out again); -r all fixes it
#   - one more cluster is appended at the end of the file with refcount 1 and nothing using
#     it: a leak ("Leaked cluster 8 refcount=1 reference=0"); -r leaks and -r all free it
#   usage: golden/demo/make-damaged.sh [OUT]     (default: damaged.qcow2 next to this script)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/damaged.qcow2}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
img=$tmp/damaged.qcow2
qemu-img create -q -f qcow2 -o cluster_size=4096 "$img" 64k
qemu-io -f qcow2 -c 'write -P 0x51 0 8k' -c 'write -P 0x49 32k 4k' "$img" >/dev/null

# big-endian integer at a file offset
be() { od -A n -t u1 -j "$2" -N "$3" "$1" | awk '{ for (i = 1; i <= NF; i++) v = v * 256 + $i } END { print v }'; }
# two bytes, big-endian, at a file offset
poke16() { printf "\\$(printf %03o $(($3 >> 8)))\\$(printf %03o $(($3 & 255)))" |
           dd of="$1" bs=1 seek="$2" conv=notrunc status=none; }

reftable=$(be "$img" 48 8)                 # header: refcount_table_offset
refblock=$(be "$img" "$reftable" 8)        # refcount table entry 0
[ "$reftable" = 4096 ] && [ "$refblock" = 8192 ] || { echo "unexpected layout" >&2; exit 1; }
poke16 "$img" $((refblock + 2 * 6)) 0      # cluster 6: refcount 1 -> 0
truncate -s $((9 * 4096)) "$img"           # cluster 8 appended (zeros)
poke16 "$img" $((refblock + 2 * 8)) 1      # cluster 8: refcount 0 -> 1, unused
cp "$img" "$out"
qemu-img check "$out" || true
