#include "checker/render.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/err.h"
#include "util/xalloc.h"

static const char *sn_str(char **v, const struct finding_names *nm, int32_t i)
{
    if (!nm || !v || i < 0 || (uint32_t)i >= nm->nb || !v[i])
        return "";
    return v[i];
}

static const char *fix_word(const struct finding *f)
{
    return (f->flags & FF_REPAIRING) ? "Repairing" : "ERROR";
}

void finding_format(const struct finding *f, const struct finding_names *nm, char *buf,
                    size_t len)
{
    const char *id = sn_str(nm ? nm->sn_id : NULL, nm, f->snapshot);
    const char *name = sn_str(nm ? nm->sn_name : NULL, nm, f->snapshot);
    const char *prog = qimg_progname;
    buf[0] = 0;
    switch ((enum finding_kind)f->kind) {
    case FK_SNAP_TABLE_POINTER_READ:
        snprintf(buf, len, "ERROR failed to read the snapshot table pointer from the image "
                 "header: %s\n", strerror(-f->err));
        break;
    case FK_SNAP_TABLE_TOO_LARGE:
        snprintf(buf, len, "%s: ERROR snapshot table too large\nYou can force-remove all %"
                 PRIu64 " overhanging snapshots with %s check -r all\n", prog,
                 f->expected, prog);
        break;
    case FK_SNAP_TABLE_OFFSET_INVALID:
        snprintf(buf, len, "%s: ERROR snapshot table offset invalid\n", prog);
        break;
    case FK_SNAP_EXTRA_TOO_LARGE:
        snprintf(buf, len, "%s: ERROR failed to read the snapshot table: Too much extra "
                 "metadata in snapshot table entry %d\nYou can force-remove this extra "
                 "metadata with %s check -r all\n", prog, f->snapshot, prog);
        break;
    case FK_SNAP_TABLE_TOO_BIG:
        snprintf(buf, len, "%s: ERROR failed to read the snapshot table: Snapshot table is "
                 "too big\nYou can force-remove all %" PRIu64 " overhanging snapshots with "
                 "%s check -r all\n", prog, f->expected, prog);
        break;
    case FK_SNAP_INCOMPLETE:
        snprintf(buf, len, "%s snapshot table entry %d is incomplete\n", fix_word(f),
                 f->snapshot);
        break;
    case FK_SNAP_WITH_DATA_FILE:
        snprintf(buf, len, "ERROR %" PRIu64 " snapshots in image with data file\n", f->found);
        break;
    case FK_SNAP_L1_UNALIGNED:
        snprintf(buf, len, "ERROR snapshot %s (%s) l1_offset=%#" PRIx64 ": L1 table is not "
                 "cluster aligned; snapshot table entry corrupted\n", id, name, f->offset);
        break;
    case FK_SNAP_L1_TOO_LARGE:
        snprintf(buf, len, "ERROR snapshot %s (%s) l1_size=%#" PRIx64 ": L1 table is too "
                 "large; snapshot table entry corrupted\n", id, name, f->found);
        break;
    case FK_L1_IO_ERROR:
        snprintf(buf, len, "ERROR: I/O error in check_refcounts_l1\n");
        break;
    case FK_L1_RESERVED:
        snprintf(buf, len, "ERROR found L1 entry with reserved bits set: %" PRIx64 "\n", f->entry);
        break;
    case FK_L2_UNALIGNED:
        snprintf(buf, len, "ERROR l2_offset=%" PRIx64 ": Table is not cluster aligned; L1 entry "
                 "corrupted\n", f->offset);
        break;
    case FK_L2_IO_ERROR:
        snprintf(buf, len, "ERROR: I/O error in check_refcounts_l2\n");
        break;
    case FK_L2_RESERVED:
        snprintf(buf, len, "ERROR found l2 entry with reserved bits set: %" PRIx64 "\n", f->entry);
        break;
    case FK_COMPRESSED_COPIED:
        snprintf(buf, len, "ERROR: coffset=0x%" PRIx64 ": copied flag must never be set for "
                 "compressed clusters\n", f->offset);
        break;
    case FK_COMPRESSED_DATA_FILE:
        snprintf(buf, len, "ERROR compressed cluster %d with data file, entry=0x%" PRIx64 "\n",
                 (int)f->l2_index, f->entry);
        break;
    case FK_COMPRESSED_SUBCLUSTERS:
        snprintf(buf, len, "ERROR compressed cluster %d with non-zero subcluster allocation "
                 "bitmap, entry=0x%" PRIx64 "\n", (int)f->l2_index, f->entry);
        break;
    case FK_SUBCLUSTER_BITMAP:
        snprintf(buf, len, "ERROR offset=%" PRIx64 ": Allocated cluster has corrupted "
                 "subcluster allocation bitmap\n", f->offset);
        break;
    case FK_DATA_UNALIGNED:
        snprintf(buf, len, "ERROR offset=%" PRIx64 ": Data cluster is not properly aligned; "
                 "L2 entry corrupted.\n", f->offset);
        break;
    case FK_PREALLOC_UNALIGNED:
        snprintf(buf, len, "%s offset=%" PRIx64 ": Preallocated cluster is not properly "
                 "aligned; L2 entry corrupted.\n", fix_word(f), f->offset);
        break;
    case FK_UNALLOC_SUBCLUSTERS:
        snprintf(buf, len, "ERROR: Unallocated cluster has non-zero subcluster allocation map\n");
        break;
    case FK_REF_PAST_EOF:
        snprintf(buf, len, "ERROR: counting reference for region exceeding the end of the file "
                 "by one cluster or more: offset 0x%" PRIx64 " size 0x%" PRIx64 "\n",
                 f->offset, f->size);
        break;
    case FK_REFCOUNT_OVERFLOW:
        snprintf(buf, len, "ERROR: overflow cluster offset=0x%" PRIx64 "\nUse %s amend to "
                 "increase the refcount entry width or %s convert to create a clean copy "
                 "if the image cannot be opened for writing\n", f->offset, prog, prog);
        break;
    case FK_IMRT_NOMEM:
        break;
    case FK_BITMAP_DIR_BROKEN:
    case FK_BITMAP_TABLE_BROKEN:
    case FK_BITMAP_ENTRY_INVALID:
        break;   /* qemu counts these silently */
    case FK_REFTABLE_RESERVED:
        snprintf(buf, len, "ERROR refcount table entry %" PRId64 " has reserved bits set\n",
                 (int64_t)f->rt_index);
        break;
    case FK_REFBLOCK_UNALIGNED:
        snprintf(buf, len, "ERROR refcount block %" PRId64 " is not cluster aligned; refcount "
                 "table entry corrupted\n", (int64_t)f->rt_index);
        break;
    case FK_REFBLOCK_OUTSIDE:
        snprintf(buf, len, "%s refcount block %" PRId64 " is outside image\n", fix_word(f),
                 (int64_t)f->rt_index);
        break;
    case FK_REFBLOCK_SHARED:
        snprintf(buf, len, "ERROR refcount block %" PRId64 " refcount=%" PRIu64 "\n",
                 (int64_t)f->rt_index, f->expected);
        break;
    case FK_REFCOUNT_READ_ERROR: {
        size_t n = 0;
        /* qcow2_signal_corruption: fatal (and marking) only when the image is writable */
        bool fatal = f->flags & FF_FATAL;
        if (f->flags & FF_SIGNAL)
            n = (size_t)snprintf(buf, len, "qcow2: %s: Refblock offset %#" PRIx64 " unaligned "
                                 "(reftable index: %#" PRIx64 "); further %scorruption events "
                                 "will be suppressed\n",
                                 fatal ? "Marking image as corrupt" : "Image is corrupt",
                                 f->offset, f->rt_index, fatal ? "" : "non-fatal ");
        if (n < len)
            snprintf(buf + n, len - n, "Can't get refcount for cluster %" PRId64 ": %s\n",
                     (int64_t)f->cluster, strerror(-f->err));
        break;
    }
    case FK_REFCOUNT_ZERO:
    case FK_REFCOUNT_LOW:
        snprintf(buf, len, "%s cluster %" PRId64 " refcount=%" PRIu64 " reference=%" PRIu64 "\n",
                 fix_word(f), (int64_t)f->cluster, f->found, f->expected);
        break;
    case FK_REFCOUNT_LEAK:
        snprintf(buf, len, "%s cluster %" PRId64 " refcount=%" PRIu64 " reference=%" PRIu64 "\n",
                 (f->flags & FF_REPAIRING) ? "Repairing" : "Leaked", (int64_t)f->cluster,
                 f->found, f->expected);
        break;
    case FK_COPIED_L1:
        snprintf(buf, len, "%s OFLAG_COPIED L2 cluster: l1_index=%d l1_entry=%" PRIx64
                 " refcount=%" PRIu64 "\n", fix_word(f), (int)f->l1_index, f->entry, f->found);
        break;
    case FK_COPIED_L2:
        snprintf(buf, len, "%s OFLAG_COPIED data cluster: l2_entry=%" PRIx64 " refcount=%" PRIu64
                 "\n", fix_word(f), f->entry, f->found);
        break;
    case FK_COPIED_L2_READ_ERROR:
        snprintf(buf, len, "ERROR: Could not read L2 table: %s\n", strerror(-f->err));
        break;
    /* qimg-only: prefixed with the program name so they cannot be mistaken for qemu's */
    case FK_DEEP_COMPRESSED_BAD:
        snprintf(buf, len, "%s: DEEP compressed cluster at offset 0x%" PRIx64 " size 0x%" PRIx64
                 " (guest offset 0x%" PRIx64 ") does not decompress to one cluster\n", prog,
                 f->offset, f->size, f->guest_offset);
        break;
    case FK_DEEP_DATA_FILE_SHORT:
        snprintf(buf, len, "%s: DEEP data file is %" PRIu64 " bytes, but guest offset 0x%" PRIx64
                 " maps to data file offset 0x%" PRIx64 "\n", prog, f->found,
                 f->guest_offset, f->offset);
        break;
    case FK_DEEP_DATA_FILE_RAW_SIZE:
        snprintf(buf, len, "%s: DEEP data_file_raw is set but the data file is %" PRIu64
                 " bytes, not the virtual size %" PRIu64 "\n", prog, f->found, f->expected);
        break;
    case FK_DEEP_DATA_FILE_OFFSET:
        snprintf(buf, len, "%s: DEEP data file offset 0x%" PRIx64 " does not match guest "
                 "offset 0x%" PRIx64 " (l2_entry=%" PRIx64 ")\n", prog, f->offset,
                 f->guest_offset, f->entry);
        break;
    case FK_DEEP_HEADER_EXT:
        snprintf(buf, len, "%s: DEEP header extension area: %s at offset 0x%" PRIx64 "\n", prog,
                 f->found == 1 ? "no end marker before the end of the extension area"
                 : f->found == 2 ? "extension data overlaps the backing file name"
                 : "non-zero padding", f->offset);
        break;
    case FK_DEEP_SNAP_L1_SIZE:
        snprintf(buf, len, "%s: DEEP snapshot %s (%s) l1_size=%" PRIu64 " is smaller than its "
                 "disk size needs (%" PRIu64 ")\n", prog, id, name, f->found, f->expected);
        break;
    case FK_DEEP_V2_ZERO_FLAG:
        snprintf(buf, len, "%s: DEEP zero flag in a version 2 image: l2_entry=%" PRIx64 "\n",
                 prog, f->entry);
        break;
    case FK_QED_L1_INVALID:
    case FK_QED_L2_INVALID:
    case FK_QED_DOUBLE_REF:
    case FK_QED_L2_IO_ERROR:
    case FK_QED_WRITE_ERROR:
    case FK_QED_LEAK:
        break; /* qemu's QED check is silent; the counters and JSON carry these */
    case FK_VDI_BLOCK_SHARED: /* qemu prints the physical index twice */
        snprintf(buf, len, "ERROR: block index %" PRIu64 " also used by %" PRIu64 "\n",
                 f->entry, f->entry);
        break;
    case FK_VDI_BLOCK_TOO_LARGE:
        snprintf(buf, len, "ERROR: block index %" PRIu64 " too large, is %" PRIu64 "\n",
                 f->l1_index, f->entry);
        break;
    case FK_VDI_ALLOC_MISMATCH:
        snprintf(buf, len, "ERROR: allocated blocks mismatch, is %" PRIu64 ", should be %"
                 PRIu64 "\n", f->found, f->expected);
        break;
    case FK__COUNT:
        break;
    }
}

void check_print_human(FILE *out, const struct check_result *r)
{
    if (!r->corruptions && !r->leaks && !r->check_errors) {
        fprintf(out, "No errors were found on the image.\n");
    } else {
        if (r->corruptions)
            fprintf(out, "\n%" PRId64 " errors were found on the image.\n"
                    "Data may be corrupted, or further writes to the image may corrupt it.\n",
                    r->corruptions);
        if (r->leaks)
            fprintf(out, "\n%" PRId64 " leaked clusters were found on the image.\n"
                    "This means waste of disk space, but no harm to data.\n", r->leaks);
        if (r->check_errors)
            fprintf(out, "\n%" PRId64 " internal errors have occurred during the check.\n",
                    r->check_errors);
    }
    if (r->total_clusters != 0 && r->allocated_clusters != 0) {
        fprintf(out, "%" PRId64 "/%" PRId64 " = %0.2f%% allocated, %0.2f%% fragmented, "
                "%0.2f%% compressed clusters\n", r->allocated_clusters, r->total_clusters,
                r->allocated_clusters * 100.0 / r->total_clusters,
                r->fragmented_clusters * 100.0 / r->allocated_clusters,
                r->compressed_clusters * 100.0 / r->allocated_clusters);
    }
    if (r->image_end_offset)
        fprintf(out, "Image end offset: %" PRId64 "\n", r->image_end_offset);
}

static void set_opt(json_t *o, const char *k, int64_t v)
{
    if (v)
        json_set(o, k, json_int(v));
}

static void set_u(json_t *o, const char *k, uint64_t v)
{
    if (v != FIND_NONE)
        json_set(o, k, json_uint(v));
}

char *finding_text(const struct finding *f, const struct finding_names *nm)
{
    /* the longest fixed text is under 512 bytes; the only strings of any length are the
     * snapshot's ID and name and the program name (a few times) */
    size_t len = 1024 + strlen(sn_str(nm ? nm->sn_id : NULL, nm, f->snapshot)) +
                 strlen(sn_str(nm ? nm->sn_name : NULL, nm, f->snapshot)) +
                 4 * strlen(qimg_progname);
    char *buf = xmalloc(len);
    finding_format(f, nm, buf, len);
    return buf;
}

/* qimg's own object: fixed key order (kind, severity, fixable-by, message, then where and
 * what), not qemu's hash order, so findings read alike from one to the next. */
json_t *finding_to_json(const struct finding *f, const struct finding_names *nm)
{
    json_t *o = json_object_ordered();
    json_set(o, "kind", json_string(finding_kind_name((enum finding_kind)f->kind)));
    json_set(o, "severity", json_string(finding_severity_name((enum finding_severity)f->severity)));
    json_set(o, "fixable-by", json_string(finding_fix_name((enum finding_fix)f->fix)));
    char *msg = finding_text(f, nm);
    size_t l = strlen(msg);
    while (l && msg[l - 1] == '\n')
        msg[--l] = 0;
    if (l)
        json_set(o, "message", json_string(msg));
    free(msg);
    set_u(o, "host-offset", f->offset);
    set_u(o, "size", f->size);
    set_u(o, "cluster", f->cluster);
    set_u(o, "entry", f->entry);
    set_u(o, "entry-offset", f->entry_offset);
    set_u(o, "l1-index", f->l1_index);
    set_u(o, "l2-index", f->l2_index);
    set_u(o, "refcount-table-index", f->rt_index);
    set_u(o, "guest-offset", f->guest_offset);
    set_u(o, "guest-length", f->guest_len);
    set_u(o, "expected", f->expected);
    set_u(o, "found", f->found);
    if (f->snapshot >= 0) {
        json_set(o, "snapshot-index", json_int(f->snapshot));
        if (nm && nm->sn_id && (uint32_t)f->snapshot < nm->nb && nm->sn_id[f->snapshot])
            json_set(o, "snapshot-id", json_string(nm->sn_id[f->snapshot]));
    }
    if (f->err)
        json_set(o, "error", json_string(strerror(-f->err)));
    return o;
}

json_t *check_to_json(const char *filename, const char *format, const struct check_result *r,
                      const struct findings *fl, const struct finding_names *nm)
{
    json_t *o = json_object();
    json_set(o, "filename", json_string(filename));
    json_set(o, "format", json_string(format));
    json_set(o, "check-errors", json_int(r->check_errors));
    set_opt(o, "image-end-offset", r->image_end_offset);
    set_opt(o, "corruptions", r->corruptions);
    set_opt(o, "leaks", r->leaks);
    set_opt(o, "corruptions-fixed", r->corruptions_fixed);
    set_opt(o, "leaks-fixed", r->leaks_fixed);
    set_opt(o, "total-clusters", r->total_clusters);
    set_opt(o, "allocated-clusters", r->allocated_clusters);
    set_opt(o, "fragmented-clusters", r->fragmented_clusters);
    set_opt(o, "compressed-clusters", r->compressed_clusters);
    if (fl) {
        json_t *a = json_array();
        for (size_t i = 0; i < fl->n; i++)
            json_append(a, finding_to_json(&fl->v[i], nm));
        json_set(o, "findings", a);
        if (fl->total > fl->n)
            json_set(o, "findings-omitted", json_uint(fl->total - fl->n));
    }
    return o;
}

static void sink_stderr(void *opaque, const struct finding *f)
{
    const struct check_run *run = opaque;
    char *buf = finding_text(f, &run->names);
    fputs(buf, stderr);
    free(buf);
}

void check_run_start(struct check_run *run, const struct check_opts *o, bool print)
{
    memset(run, 0, sizeof(*run));
    findings_init(&run->findings, o->findings_cap ? o->findings_cap : 100000);
    if (print) {
        run->findings.sink = sink_stderr;
        run->findings.sink_opaque = run;
    }
}
