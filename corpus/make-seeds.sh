#!/bin/sh
# Regenerates corpus/seeds/: tiny images made by the real qemu-img/qemu-io across the
# option matrix (versions, cluster sizes, refcount widths, extended L2, compression,
# snapshots, bitmaps, backing file, external data file, preallocation, zero clusters, other
# formats). Every fuzz target starts from these. Small cluster sizes and virtual sizes keep
# each file a few KiB; nothing here is random, so a rerun gives the same images except for
# snapshot dates.
#   usage: corpus/make-seeds.sh [OUTDIR]     (default: corpus/seeds next to this script)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/seeds}
QEMU_IMG=${QEMU_IMG:-qemu-img}
QEMU_IO=${QEMU_IO:-qemu-io}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

img() { # name size options...
    n=$1; s=$2; shift 2
    "$QEMU_IMG" create -q -f qcow2 "$@" "$n.qcow2" "$s"
}
io() { # name commands...
    n=$1; shift
    for c in "$@"; do "$QEMU_IO" -f qcow2 -c "$c" "$n.qcow2" >/dev/null; done
}
keep() { for n in "$@"; do cp "$n.qcow2" "$out/$n.qcow2"; done; }

# versions x cluster sizes, with data at two clusters and a zero cluster
for v in 0.10 1.1; do
    for cs in 512 1k 4k; do
        n=v${v%%.*}${v#*.}-cs$cs
        img "$n" 64k -o compat=$v,cluster_size=$cs
        io "$n" "write -P 0xaa 0 $cs" "write -P 0xbb 8k 1k"
        [ "$v" = 1.1 ] && io "$n" "write -z 16k 4k"
        keep "$n"
    done
done
img empty-cs512 32k -o cluster_size=512; keep empty-cs512
img empty-v2 32k -o compat=0.10,cluster_size=512; keep empty-v2

# every refcount width
for rb in 1 2 4 8 16 32 64; do
    n=refbits$rb
    img $n 32k -o cluster_size=512,refcount_bits=$rb
    io $n "write -P 0x11 0 1k" "write -P 0x22 4k 512"
    keep $n
done

# extended L2 (needs >= 16k clusters), zlib and zstd headers
img extl2 64k -o cluster_size=16k,extended_l2=on
io extl2 "write -P 0xaa 0 2k" "write -P 0xab 4k 1k" "write -z 8k 1k" "write -P 0xbb 32k 16k"
keep extl2
img zstd 32k -o cluster_size=512,compression_type=zstd; io zstd "write -P 1 0 512"; keep zstd

# compressed clusters (zlib and zstd) via convert -c
"$QEMU_IMG" create -q -f raw src.raw 32k
"$QEMU_IO" -f raw -c "write -P 0xaa 0 4k" -c "write -P 0xbb 8k 4k" -c "write -P 0xcc 20k 2k" src.raw >/dev/null
"$QEMU_IMG" convert -c -O qcow2 -o cluster_size=4k src.raw comp-zlib.qcow2
"$QEMU_IMG" convert -c -O qcow2 -o cluster_size=4k,compression_type=zstd src.raw comp-zstd.qcow2
"$QEMU_IMG" convert -c -O qcow2 -o cluster_size=512,compat=0.10 src.raw comp-v2.qcow2
keep comp-zlib comp-zstd comp-v2

# internal snapshots (v2 and v3), COW after the snapshot
for v in 0.10 1.1; do
    n=snap-v${v%%.*}${v#*.}
    img $n 32k -o compat=$v,cluster_size=512
    io $n "write -P 0xaa 0 1k"
    "$QEMU_IMG" snapshot -c s1 $n.qcow2
    io $n "write -P 0xcc 0 512" "write -P 0xdd 2k 512"
    "$QEMU_IMG" snapshot -c s2 $n.qcow2
    keep $n
done

# persistent bitmaps
img bitmaps 64k -o cluster_size=4k
"$QEMU_IMG" bitmap --add -g 4k bitmaps.qcow2 bm0
io bitmaps "write -P 0x11 4k 4k" "write -P 0x22 32k 4k"
"$QEMU_IMG" bitmap --add bitmaps.qcow2 bm1
"$QEMU_IMG" bitmap --add --disable bitmaps.qcow2 bm2
keep bitmaps

# lazy refcounts
img lazy 32k -o cluster_size=512,lazy_refcounts=on; io lazy "write -P 3 0 1k"; keep lazy

# backing file (the fuzz targets' scratch dir has an empty base.qcow2)
img base 32k -o cluster_size=512; io base "write -P 0x44 0 4k"
img overlay 32k -o cluster_size=512 -b base.qcow2 -F qcow2
io overlay "write -P 0x55 1k 512"
keep overlay

# external data file (df.raw), plain and raw
img datafile 64k -o cluster_size=4k,data_file=df.raw; io datafile "write -P 0xaa 0 4k"
img datafile-raw 64k -o cluster_size=4k,data_file=df.raw,data_file_raw=on
keep datafile datafile-raw

# preallocation=metadata, and a backing-less image full of zero clusters
img prealloc 16k -o cluster_size=512,preallocation=metadata; keep prealloc
img zeros 16k -o cluster_size=512; io zeros "write -z 0 16k"; keep zeros

# other formats: probing and their drivers
"$QEMU_IMG" create -q -f qed -o cluster_size=4k qed.img 64k
"$QEMU_IO" -f qed -c "write -P 0xaa 0 4k" qed.img >/dev/null
"$QEMU_IMG" create -q -f vdi vdi.img 2M   # a written block would be 1 MiB
# qcow version 1: plain with a backing file, compressed (qemu-img 7.2 writes both)
"$QEMU_IMG" create -q -f qcow -b qed.img -F qed qcow1.img 64k
"$QEMU_IO" -f qcow -c "write -P 0xcc 4k 4k" qcow1.img >/dev/null
# (7.2 exits 1 without a message when the source has unallocated clusters; the image is
# complete: compare finds it identical)
"$QEMU_IMG" convert -c -O qcow src.raw qcow1-comp.img || true
cp qed.img vdi.img qcow1.img qcow1-comp.img "$out/"
printf 'hello raw image\n' > "$out/raw.img"
ls "$out" | wc -l | sed 's/^/seeds: /'
du -sh "$out" | sed 's/^/size: /'
