/* The checker's output model: a list of typed findings. Detection code never prints; it
 * adds findings here. The human text (qemu-img 7.2 wording), the JSON "findings" array and
 * the repair planner are all renderings/consumers of this list.
 *
 * Memory: an image can produce millions of findings (a zeroed refcount table on a 1 TiB
 * image gives one per cluster). A sink sees every finding as it is added (human output
 * streams through it, in qemu's order); the list keeps the first `cap` findings in full and
 * only counts the rest (per kind), so memory stays bounded. */
#ifndef QIMG_CHECKER_FINDINGS_H
#define QIMG_CHECKER_FINDINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* One kind per condition of digest §3.13, then the qimg-only deep checks. Keep the
 * names table in findings.c in the same order. */
enum finding_kind {
    /* snapshot table pass (§3.1) */
    FK_SNAP_TABLE_POINTER_READ,   /* E  header read failed */
    FK_SNAP_TABLE_TOO_LARGE,      /* E  nb_snapshots > 65536: aborts */
    FK_SNAP_TABLE_OFFSET_INVALID, /* E  misaligned / overflow: aborts */
    FK_SNAP_EXTRA_TOO_LARGE,      /* E  extra_data_size > 1024: aborts */
    FK_SNAP_TABLE_TOO_BIG,        /* E  table > 64 MiB: aborts */
    FK_SNAP_INCOMPLETE,           /* C  v3 entry with extra_data_size < 16 */
    /* L1/L2 walk (§3.3-3.4) */
    FK_SNAP_WITH_DATA_FILE,       /* C */
    FK_SNAP_L1_UNALIGNED,         /* C  snapshot skipped */
    FK_SNAP_L1_TOO_LARGE,         /* C  snapshot skipped */
    FK_L1_IO_ERROR,               /* E  aborts */
    FK_L1_RESERVED,               /* C */
    FK_L2_UNALIGNED,              /* C */
    FK_L2_IO_ERROR,               /* E  aborts */
    FK_L2_RESERVED,               /* C */
    FK_COMPRESSED_COPIED,         /* C */
    FK_COMPRESSED_DATA_FILE,      /* C */
    FK_COMPRESSED_SUBCLUSTERS,    /* C */
    FK_SUBCLUSTER_BITMAP,         /* C  alloc and zero bits both set */
    FK_DATA_UNALIGNED,            /* C */
    FK_PREALLOC_UNALIGNED,        /* C  fixable by -r all (entry -> zero) */
    FK_UNALLOC_SUBCLUSTERS,       /* C */
    FK_REF_PAST_EOF,              /* C  reference >= 1 cluster past EOF */
    FK_REFCOUNT_OVERFLOW,         /* C */
    FK_IMRT_NOMEM,                /* E */
    /* bitmaps (§3.3 step 8) */
    FK_BITMAP_DIR_BROKEN,         /* C  aborts with -EINVAL */
    FK_BITMAP_TABLE_BROKEN,       /* C  aborts with -EINVAL */
    FK_BITMAP_ENTRY_INVALID,      /* C  silent in qemu */
    /* refblock pass (§3.5) */
    FK_REFTABLE_RESERVED,         /* C  needs rebuild */
    FK_REFBLOCK_UNALIGNED,        /* C  needs rebuild */
    FK_REFBLOCK_OUTSIDE,          /* C  fixable by -r all (grow file) */
    FK_REFBLOCK_SHARED,           /* C  needs rebuild */
    /* compare (§3.6) */
    FK_REFCOUNT_READ_ERROR,       /* E  "Can't get refcount" */
    FK_REFCOUNT_ZERO,             /* C  on-disk 0, referenced: needs rebuild */
    FK_REFCOUNT_LOW,              /* C  on-disk < computed: -r all */
    FK_REFCOUNT_LEAK,             /* L  on-disk > computed: -r leaks */
    /* OFLAG_COPIED (§3.9) */
    FK_COPIED_L1,                 /* C */
    FK_COPIED_L2,                 /* C */
    FK_COPIED_L2_READ_ERROR,      /* E */
    /* QED (digest §5.1): qemu prints no line for any of these */
    FK_QED_L1_INVALID,            /* C  bad L2 table offset; any -r zeroes the L1 entry */
    FK_QED_L2_INVALID,            /* C  bad data cluster offset; any -r zeroes the L2 entry */
    FK_QED_DOUBLE_REF,            /* C  cluster referenced again; never fixed */
    FK_QED_L2_IO_ERROR,           /* E  L2 table unreadable */
    FK_QED_WRITE_ERROR,           /* E  writing a fixed table failed */
    FK_QED_LEAK,                  /* L  unreferenced cluster; QED never fixes leaks */
    /* VDI (digest §5.2): check only, any -r is refused */
    FK_VDI_BLOCK_SHARED,          /* C  two guest blocks map to one physical block */
    FK_VDI_BLOCK_TOO_LARGE,       /* C  map entry >= blocks_in_image */
    FK_VDI_ALLOC_MISMATCH,        /* C  header blocks_allocated != counted */
    /* qimg-only deep checks (--deep); never emitted without it */
    FK_DEEP_COMPRESSED_BAD,       /* compressed cluster does not inflate to one cluster */
    FK_DEEP_DATA_FILE_SHORT,      /* external data file shorter than a mapped cluster */
    FK_DEEP_DATA_FILE_RAW_SIZE,   /* data_file_raw: data file size != virtual size */
    FK_DEEP_DATA_FILE_OFFSET,     /* data-file L2 offset != guest offset (digest §13.6) */
    FK_DEEP_HEADER_EXT,           /* header extension area malformed / not terminated */
    FK_DEEP_SNAP_L1_SIZE,         /* snapshot l1_size < size_to_l1(snapshot disk size) */
    FK_DEEP_V2_ZERO_FLAG,         /* zero flag in a v2 image (v2 has no zero clusters) */
    FK__COUNT
};

enum finding_severity { SEV_CORRUPTION, SEV_LEAK, SEV_CHECK_ERROR };

/* What a repair may do about it (qemu 7.2's rules, digest §3.13). */
enum finding_fix {
    FIX_NEVER,     /* qemu never repairs it */
    FIX_LEAKS,     /* -r leaks (and -r all) */
    FIX_ALL,       /* -r all */
    FIX_REBUILD,   /* -r all, via a refcount structure rebuild */
};

#define FIND_NONE UINT64_MAX   /* "not applicable" for any uint64 field */

/* finding.flags */
#define FF_REPAIRING 0x1u   /* found in a fixing run: qemu prints "Repairing" for it */
#define FF_SIGNAL    0x2u   /* first corruption event: qemu also prints its
                               "qcow2: Image is corrupt: ..." line before this one */
#define FF_FATAL     0x4u   /* with FF_SIGNAL: the image is open read-write (a repair), so
                               qemu's event is fatal: "Marking image as corrupt: ..." */

struct finding {
    uint16_t kind;           /* enum finding_kind */
    uint8_t severity;        /* enum finding_severity */
    uint8_t fix;             /* enum finding_fix */
    int32_t snapshot;        /* snapshot table index, -1 = active image / n.a. */
    int32_t err;             /* negative errno for check errors, else 0 */
    uint32_t flags;          /* FF_* */
    uint64_t offset;         /* host offset the finding is about (cluster, table, entry target) */
    uint64_t size;           /* size of the referenced range, where relevant */
    uint64_t cluster;        /* host cluster index */
    uint64_t entry;          /* raw table entry (L1/L2/reftable word) as found */
    uint64_t entry_offset;   /* file offset of that entry: what a repair rewrites */
    uint64_t l1_index, l2_index, rt_index;
    uint64_t guest_offset, guest_len;   /* affected guest byte range */
    uint64_t expected, found;           /* e.g. computed vs on-disk refcount */
};

/* Initializer with every optional field "n/a". */
struct finding finding_make(enum finding_kind kind);

const char *finding_kind_name(enum finding_kind kind);          /* "refcount-leak" */
enum finding_severity finding_kind_severity(enum finding_kind kind);
enum finding_fix finding_kind_fix(enum finding_kind kind);
bool finding_kind_is_deep(enum finding_kind kind);
const char *finding_severity_name(enum finding_severity s);   /* "corruption" ... */
const char *finding_fix_name(enum finding_fix f);             /* "never" "leaks" "all" "rebuild" */

struct findings;
typedef void (*finding_sink)(void *opaque, const struct finding *f);

struct findings {
    struct finding *v;
    size_t n, alloc;
    size_t cap;               /* keep at most this many in v */
    uint64_t total;           /* all findings added, kept or not */
    uint64_t per_kind[FK__COUNT];
    finding_sink sink;
    void *sink_opaque;
};

void findings_init(struct findings *l, size_t cap);
void findings_free(struct findings *l);
void findings_add(struct findings *l, const struct finding *f);

#endif
