#include "checker/findings.h"

#include <stdlib.h>
#include <string.h>

#include "util/xalloc.h"

struct kind_info {
    const char *name;
    uint8_t severity;
    uint8_t fix;
    bool deep;
};

/* Same order as enum finding_kind. */
static const struct kind_info kinds[FK__COUNT] = {
    [FK_SNAP_TABLE_POINTER_READ] = { "snapshot-table-pointer-unreadable", SEV_CHECK_ERROR, FIX_NEVER, false },
    [FK_SNAP_TABLE_TOO_LARGE] = { "snapshot-table-too-large", SEV_CHECK_ERROR, FIX_ALL, false },
    [FK_SNAP_TABLE_OFFSET_INVALID] = { "snapshot-table-offset-invalid", SEV_CHECK_ERROR, FIX_NEVER, false },
    [FK_SNAP_EXTRA_TOO_LARGE] = { "snapshot-extra-data-too-large", SEV_CHECK_ERROR, FIX_ALL, false },
    [FK_SNAP_TABLE_TOO_BIG] = { "snapshot-table-too-big", SEV_CHECK_ERROR, FIX_ALL, false },
    [FK_SNAP_INCOMPLETE] = { "snapshot-entry-incomplete", SEV_CORRUPTION, FIX_ALL, false },
    [FK_SNAP_WITH_DATA_FILE] = { "snapshots-with-data-file", SEV_CORRUPTION, FIX_NEVER, false },
    [FK_SNAP_L1_UNALIGNED] = { "snapshot-l1-unaligned", SEV_CORRUPTION, FIX_NEVER, false },
    [FK_SNAP_L1_TOO_LARGE] = { "snapshot-l1-too-large", SEV_CORRUPTION, FIX_NEVER, false },
    [FK_L1_IO_ERROR] = { "l1-io-error", SEV_CHECK_ERROR, FIX_NEVER, false },
    [FK_L1_RESERVED] = { "l1-entry-reserved-bits", SEV_CORRUPTION, FIX_NEVER, false },
    [FK_L2_UNALIGNED] = { "l2-table-unaligned", SEV_CORRUPTION, FIX_NEVER, false },
    [FK_L2_IO_ERROR] = { "l2-io-error", SEV_CHECK_ERROR, FIX_NEVER, false },
    [FK_L2_RESERVED] = { "l2-entry-reserved-bits", SEV_CORRUPTION, FIX_NEVER, false },
    [FK_COMPRESSED_COPIED] = { "compressed-copied-flag", SEV_CORRUPTION, FIX_NEVER, false },
    [FK_COMPRESSED_DATA_FILE] = { "compressed-with-data-file", SEV_CORRUPTION, FIX_NEVER, false },
    [FK_COMPRESSED_SUBCLUSTERS] = { "compressed-subcluster-bitmap", SEV_CORRUPTION, FIX_NEVER, false },
    [FK_SUBCLUSTER_BITMAP] = { "subcluster-bitmap-corrupt", SEV_CORRUPTION, FIX_NEVER, false },
    [FK_DATA_UNALIGNED] = { "data-cluster-unaligned", SEV_CORRUPTION, FIX_NEVER, false },
    [FK_PREALLOC_UNALIGNED] = { "prealloc-cluster-unaligned", SEV_CORRUPTION, FIX_ALL, false },
    [FK_UNALLOC_SUBCLUSTERS] = { "unallocated-subcluster-bitmap", SEV_CORRUPTION, FIX_NEVER, false },
    [FK_REF_PAST_EOF] = { "reference-past-eof", SEV_CORRUPTION, FIX_NEVER, false },
    [FK_REFCOUNT_OVERFLOW] = { "refcount-overflow", SEV_CORRUPTION, FIX_NEVER, false },
    [FK_IMRT_NOMEM] = { "out-of-memory", SEV_CHECK_ERROR, FIX_NEVER, false },
    [FK_BITMAP_DIR_BROKEN] = { "bitmap-directory-broken", SEV_CORRUPTION, FIX_NEVER, false },
    [FK_BITMAP_TABLE_BROKEN] = { "bitmap-table-broken", SEV_CORRUPTION, FIX_NEVER, false },
    [FK_BITMAP_ENTRY_INVALID] = { "bitmap-table-entry-invalid", SEV_CORRUPTION, FIX_NEVER, false },
    [FK_REFTABLE_RESERVED] = { "reftable-entry-reserved-bits", SEV_CORRUPTION, FIX_REBUILD, false },
    [FK_REFBLOCK_UNALIGNED] = { "refblock-unaligned", SEV_CORRUPTION, FIX_REBUILD, false },
    [FK_REFBLOCK_OUTSIDE] = { "refblock-outside-image", SEV_CORRUPTION, FIX_ALL, false },
    [FK_REFBLOCK_SHARED] = { "refblock-shared", SEV_CORRUPTION, FIX_REBUILD, false },
    [FK_REFCOUNT_READ_ERROR] = { "refcount-unreadable", SEV_CHECK_ERROR, FIX_NEVER, false },
    [FK_REFCOUNT_ZERO] = { "refcount-zero-but-referenced", SEV_CORRUPTION, FIX_REBUILD, false },
    [FK_REFCOUNT_LOW] = { "refcount-too-low", SEV_CORRUPTION, FIX_ALL, false },
    [FK_REFCOUNT_LEAK] = { "refcount-leak", SEV_LEAK, FIX_LEAKS, false },
    [FK_COPIED_L1] = { "copied-flag-l1", SEV_CORRUPTION, FIX_LEAKS, false },
    [FK_COPIED_L2] = { "copied-flag-l2", SEV_CORRUPTION, FIX_LEAKS, false },
    [FK_COPIED_L2_READ_ERROR] = { "copied-l2-unreadable", SEV_CHECK_ERROR, FIX_NEVER, false },
    [FK_QED_L1_INVALID] = { "qed-l1-entry-invalid", SEV_CORRUPTION, FIX_LEAKS, false },
    [FK_QED_L2_INVALID] = { "qed-l2-entry-invalid", SEV_CORRUPTION, FIX_LEAKS, false },
    [FK_QED_DOUBLE_REF] = { "qed-cluster-double-reference", SEV_CORRUPTION, FIX_NEVER, false },
    [FK_QED_L2_IO_ERROR] = { "qed-l2-io-error", SEV_CHECK_ERROR, FIX_NEVER, false },
    [FK_QED_WRITE_ERROR] = { "qed-table-write-error", SEV_CHECK_ERROR, FIX_NEVER, false },
    [FK_QED_LEAK] = { "qed-leak", SEV_LEAK, FIX_NEVER, false },
    [FK_VDI_BLOCK_SHARED] = { "vdi-block-shared", SEV_CORRUPTION, FIX_NEVER, false },
    [FK_VDI_BLOCK_TOO_LARGE] = { "vdi-block-index-too-large", SEV_CORRUPTION, FIX_NEVER, false },
    [FK_VDI_ALLOC_MISMATCH] = { "vdi-allocated-count-mismatch", SEV_CORRUPTION, FIX_NEVER, false },
    [FK_DEEP_COMPRESSED_BAD] = { "compressed-cluster-bad", SEV_CORRUPTION, FIX_NEVER, true },
    [FK_DEEP_DATA_FILE_SHORT] = { "data-file-too-short", SEV_CORRUPTION, FIX_NEVER, true },
    [FK_DEEP_DATA_FILE_RAW_SIZE] = { "data-file-raw-size", SEV_CORRUPTION, FIX_NEVER, true },
    [FK_DEEP_DATA_FILE_OFFSET] = { "data-file-offset-mismatch", SEV_CORRUPTION, FIX_NEVER, true },
    [FK_DEEP_HEADER_EXT] = { "header-extension-area", SEV_CORRUPTION, FIX_NEVER, true },
    [FK_DEEP_SNAP_L1_SIZE] = { "snapshot-l1-size-short", SEV_CORRUPTION, FIX_NEVER, true },
    [FK_DEEP_V2_ZERO_FLAG] = { "zero-flag-in-v2-image", SEV_CORRUPTION, FIX_NEVER, true },
};

struct finding finding_make(enum finding_kind kind)
{
    struct finding f;
    memset(&f, 0, sizeof(f));
    f.kind = (uint16_t)kind;
    f.severity = kinds[kind].severity;
    f.fix = kinds[kind].fix;
    f.snapshot = -1;
    f.offset = f.size = f.cluster = f.entry = f.entry_offset = FIND_NONE;
    f.l1_index = f.l2_index = f.rt_index = FIND_NONE;
    f.guest_offset = f.guest_len = FIND_NONE;
    f.expected = f.found = FIND_NONE;
    return f;
}

const char *finding_kind_name(enum finding_kind k)
{
    return (unsigned)k < FK__COUNT && kinds[k].name ? kinds[k].name : "unknown";
}

enum finding_severity finding_kind_severity(enum finding_kind k)
{
    return (enum finding_severity)kinds[k].severity;
}

enum finding_fix finding_kind_fix(enum finding_kind k)
{
    return (enum finding_fix)kinds[k].fix;
}

bool finding_kind_is_deep(enum finding_kind k)
{
    return kinds[k].deep;
}

const char *finding_severity_name(enum finding_severity s)
{
    switch (s) {
    case SEV_CORRUPTION: return "corruption";
    case SEV_LEAK: return "leak";
    case SEV_CHECK_ERROR: return "check-error";
    }
    return "unknown";
}

const char *finding_fix_name(enum finding_fix f)
{
    switch (f) {
    case FIX_NEVER: return "never";
    case FIX_LEAKS: return "leaks";
    case FIX_ALL: return "all";
    case FIX_REBUILD: return "rebuild";
    }
    return "unknown";
}

void findings_init(struct findings *l, size_t cap)
{
    memset(l, 0, sizeof(*l));
    l->cap = cap;
}

void findings_free(struct findings *l)
{
    free(l->v);
    l->v = NULL;
    l->n = l->alloc = 0;
}

void findings_add(struct findings *l, const struct finding *f)
{
    l->total++;
    if (f->kind < FK__COUNT)
        l->per_kind[f->kind]++;
    if (l->sink)
        l->sink(l->sink_opaque, f);
    if (l->n >= l->cap)
        return;
    if (l->n == l->alloc) {
        size_t na = l->alloc ? l->alloc * 2 : 64;
        if (na > l->cap)
            na = l->cap;
        l->v = xreallocarray(l->v, na, sizeof(*l->v));
        l->alloc = na;
    }
    l->v[l->n++] = *f;
}
