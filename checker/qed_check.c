/* QED check, qemu 7.2's qed_check(): mark the L1 table, walk every L2 table, mark each
 * referenced cluster in a bitmap (a second reference is a corruption), then count unmarked
 * clusters as leaks. Cluster indices use qemu's qed_bytes_to_clusters(), whose divisor is
 * cluster_size - 1, so our counts match qemu's even where that quirk invents a leak.
 *
 * Writes (fix mode only): the whole L2 table holding a zeroed entry, the whole L1 table,
 * and the header (NEED_CHECK cleared), through the write port (io/wport.h): direct, or
 * journaled (--journal) or planned (--dry-run) as the caller chose. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/qed_int.h"
#include "checker/blk_check.h"
#include "io/wport.h"
#include "util/xalloc.h"

struct qc {
    image_t *img;
    struct qed_state *s;
    const struct qed_header *h;
    struct check_run *run;
    bool fix;
    struct wport *w;        /* where fixes are written (fix mode) */
    uint64_t nclusters;     /* qemu's (quirky) cluster count of the file */
    uint32_t *used;         /* referenced-cluster bitmap, nclusters bits */
    uint64_t *l2;           /* the L2 table being checked */
};

static void add(struct qc *c, const struct finding *f)
{
    findings_add(&c->run->findings, f);
}

/* qemu's qed_set_used_clusters(): false if any of the n clusters was already marked. */
static bool set_used(struct qc *c, uint64_t offset, uint32_t n)
{
    uint64_t cl = qed_bytes_to_clusters_quirk(c->h, offset);
    unsigned dups = 0;
    for (uint32_t i = 0; i < n; i++, cl++) {
        if (cl >= c->nclusters)  /* cannot happen for validated offsets; stay in bounds */
            break;
        uint32_t bit = 1u << (cl % 32);
        if (c->used[cl / 32] & bit) {
            dups++;
            struct finding f = finding_make(FK_QED_DOUBLE_REF);
            f.cluster = cl;
            f.offset = offset + (uint64_t)i * c->h->cluster_size;
            add(c, &f);
        }
        c->used[cl / 32] |= bit;
    }
    c->run->res.corruptions += dups;
    return dups == 0;
}

static uint64_t guest_of(const struct qc *c, uint64_t l1i, uint64_t l2i)
{
    return (l1i << c->h->l1_shift) | (l2i << c->h->l2_shift);
}

/* qemu's qed_check_l2_table(): returns the number of invalid entries. */
static unsigned check_l2(struct qc *c, uint64_t l1i, uint64_t l2_off)
{
    struct check_result *r = &c->run->res;
    unsigned invalid = 0;
    uint64_t last = 0;
    for (uint32_t i = 0; i < c->h->table_nelems; i++) {
        uint64_t off = c->l2[i];
        if (off == 0 || off == 1)
            continue;
        r->allocated_clusters++;
        if (last && last + c->h->cluster_size != off)
            r->fragmented_clusters++;
        last = off;
        if (!qed_cluster_offset_ok(c->h, off)) {
            struct finding f = finding_make(FK_QED_L2_INVALID);
            f.entry = off;
            f.entry_offset = l2_off + (uint64_t)i * 8;
            f.l1_index = l1i;
            f.l2_index = i;
            f.guest_offset = guest_of(c, l1i, i);
            f.guest_len = c->h->cluster_size;
            if (c->fix) {
                c->l2[i] = 0;
                f.flags |= FF_REPAIRING;
                r->corruptions_fixed++;
            } else {
                r->corruptions++;
            }
            add(c, &f);
            invalid++;
            continue;
        }
        set_used(c, off, 1);
    }
    return invalid;
}

/* qemu's qed_write_table of a whole table, through the port. */
static int write_table(struct qc *c, uint64_t off, const uint64_t *t, const char *what,
                       unsigned cleared)
{
    size_t n = c->h->table_bytes;
    uint8_t *raw = xmalloc(n);
    for (uint32_t i = 0; i < c->h->table_nelems; i++)
        for (int b = 0; b < 8; b++)
            raw[(size_t)i * 8 + b] = (uint8_t)(t[i] >> (8 * b));   /* little endian */
    wport_label(c->w, PC_TABLE, "%s at 0x%llx: %u invalid entr%s cleared", what,
                (unsigned long long)off, cleared, cleared == 1 ? "y" : "ies");
    int rc = wport_pwrite(c->w, off, raw, n);
    free(raw);
    return rc;
}

static void io_error(struct qc *c, enum finding_kind k, uint64_t off, uint64_t l1i, int err)
{
    struct finding f = finding_make(k);
    f.offset = off;
    f.size = c->h->table_bytes;
    f.l1_index = l1i;
    f.err = err;
    add(c, &f);
    c->run->res.check_errors++;
}

/* qemu's qed_check_l1_table(): returns 0 or the last I/O error. */
static int check_l1(struct qc *c)
{
    const struct qed_header *h = c->h;
    struct check_result *r = &c->run->res;
    unsigned invalid_l1 = 0;
    int last_error = 0;
    set_used(c, h->l1_table_offset, h->table_size);
    for (uint32_t i = 0; i < h->table_nelems; i++) {
        uint64_t off = c->s->l1[i];
        if (off == 0)
            continue;
        if (!qed_table_offset_ok(h, off)) {
            struct finding f = finding_make(FK_QED_L1_INVALID);
            f.entry = off;
            f.entry_offset = h->l1_table_offset + (uint64_t)i * 8;
            f.l1_index = i;
            f.guest_offset = (uint64_t)i << h->l1_shift;
            f.guest_len = (uint64_t)1 << h->l1_shift;
            if (c->fix) {
                c->s->l1[i] = 0;
                f.flags |= FF_REPAIRING;
                r->corruptions_fixed++;
            } else {
                r->corruptions++;
            }
            add(c, &f);
            invalid_l1++;
            continue;
        }
        if (!set_used(c, off, h->table_size))
            continue; /* a table sharing clusters is not descended into */
        int rc = qed_read_table(c->img->file, h, off, c->l2);
        if (rc < 0) {
            io_error(c, FK_QED_L2_IO_ERROR, off, i, rc);
            last_error = rc;
            continue;
        }
        unsigned invalid = check_l2(c, i, off);
        if (invalid && c->fix) {
            c->s->l2_offset = 0; /* the driver's cached copy is stale now */
            rc = write_table(c, off, c->l2, "L2 table", invalid);
            if (rc < 0) {
                io_error(c, FK_QED_WRITE_ERROR, off, i, rc);
                last_error = rc;
            }
        }
    }
    if (invalid_l1 && c->fix) {
        int rc = write_table(c, h->l1_table_offset, c->s->l1, "L1 table", invalid_l1);
        if (rc < 0) {
            io_error(c, FK_QED_WRITE_ERROR, h->l1_table_offset, FIND_NONE, rc);
            last_error = rc;
        }
    }
    return last_error;
}

static void check_leaks(struct qc *c)
{
    for (uint64_t i = c->h->header_size; i < c->nclusters; i++) {
        if (c->used[i / 32] & (1u << (i % 32)))
            continue;
        c->run->res.leaks++;
        struct finding f = finding_make(FK_QED_LEAK);
        f.cluster = i;
        add(c, &f);
    }
}

/* The header with NEED_CHECK cleared, after a flush (qemu ignores a failure). */
static void clear_need_check(struct qed_state *s, struct wport *w, const char *why)
{
    wport_flush(w);
    s->h.features &= ~QED_F_NEED_CHECK;
    uint8_t hb[QED_HEADER_LEN];
    qed_header_encode(&s->h, hb);
    wport_label(w, PC_HEADER, "header: NEED_CHECK cleared%s", why);
    (void)wport_pwrite(w, 0, hb, sizeof(hb));
}

/* qemu's qed_check_mark_clean(). */
static void mark_clean(struct qc *c)
{
    struct check_result *r = &c->run->res;
    if (r->corruptions > 0 || r->check_errors > 0)
        return;
    if (!(c->s->h.features & QED_F_NEED_CHECK))
        return;
    clear_need_check(c->s, c->w, "");
}

void qed_check_close_clean(image_t *img, struct wport *w)
{
    struct qed_state *s = img->priv;
    if ((img->flags & IMG_OPEN_RDWR) && s && s->l1 && (s->h.features & QED_F_NEED_CHECK))
        clear_need_check(s, w, " (the read-write close)");
}

int qed_check_pass(image_t *img, unsigned fix, struct check_run *run)
{
    struct wport w;
    int rc = fix ? wport_init_direct(&w, img->file) : 0;
    return rc < 0 ? rc : qed_check_pass_port(img, fix, run, &w);
}

int qed_check_pass_port(image_t *img, unsigned fix, struct check_run *run, struct wport *w)
{
    struct qc c;
    memset(&c, 0, sizeof(c));
    c.img = img;
    c.s = img->priv;
    c.h = &c.s->h;
    c.run = run;
    c.fix = fix != 0;
    c.w = w;
    /* bounded by the file: about one bit per cluster of the file */
    c.nclusters = qed_bytes_to_clusters_quirk(c.h, c.h->file_size);
    c.used = xcalloc((size_t)(c.nclusters / 32 + 1), sizeof(uint32_t));
    c.l2 = xmalloc((size_t)c.h->table_nelems * 8);
    run->res.total_clusters =
        (int64_t)((c.h->image_size + c.h->cluster_size - 1) / c.h->cluster_size);
    run->res.has_stats = true;
    int ret = check_l1(&c);
    if (ret == 0) {
        check_leaks(&c); /* only after a complete scan, as qemu */
        if (c.fix)
            mark_clean(&c);
    }
    free(c.used);
    free(c.l2);
    return ret;
}
