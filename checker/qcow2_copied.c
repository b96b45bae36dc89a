/* §3.9: OFLAG_COPIED in the active L1 and the L2 tables it reaches must say
 * "refcount == 1", judged against the on-disk refcounts. */
#include <stdlib.h>
#include <string.h>

#include "checker/qcow2_check.h"
#include "checker/qcow2_l2read.h"
#include "format/be.h"
#include "util/xalloc.h"

int qc2_pass_copied(struct qc2 *s)
{
    struct rc_lookup lk = { 0, NULL, 0, false };
    struct l2_reader rd = { 0 };   /* allocated on the first table read */
    int ret = 0;
    uint8_t *patched = NULL;   /* -r: a fixed copy of the current L2 table */
    bool repairing = s->fix & CHECK_FIX_ERRORS ||
                     ((s->fix & CHECK_FIX_LEAKS) && !s->res->check_errors &&
                      !s->res->corruptions && !s->res->leaks);
    uint64_t esz = s->h.l2_entry_size, n = s->h.l2_entries;
    for (uint64_t i = 0; i < s->l1_loaded; i++) {
        uint64_t l1e = s->l1[i];
        uint64_t l2 = l1e & QCOW2_L1E_OFFSET_MASK;
        uint64_t rc1;
        if (!l2)
            continue;
        lk.valid = false;   /* the block cache slot may have been reused */
        if (qc2_ondisk_refcount(s, l2 >> s->h.cluster_bits, &rc1) < 0)
            continue;   /* qemu: no message, no check error */
        if ((rc1 == 1) != !!(l1e & QCOW2_OFLAG_COPIED)) {
            struct finding f = finding_make(FK_COPIED_L1);
            f.l1_index = i;
            f.entry = l1e;
            f.entry_offset = s->h.l1_table_offset + i * 8;
            f.offset = l2;
            f.cluster = l2 >> s->h.cluster_bits;
            f.found = rc1;
            f.expected = 1;
            if (repairing)
                f.flags |= FF_REPAIRING;
            qc2_report(s, &f);
            if (repairing && s->fixer) {
                uint64_t ne = rc1 == 1 ? l1e | QCOW2_OFLAG_COPIED : l1e & ~QCOW2_OFLAG_COPIED;
                ret = s->fixer->write_l1_entry(s, i, ne);
                if (ret < 0) {
                    s->res->check_errors++;
                    break;
                }
                s->res->corruptions--;
                s->res->corruptions_fixed++;
            }
        }
        if (s->copied_suspect && !s->copied_suspect[i])
            continue;   /* the walk found this table's entries right (read-only check) */
        if (!rd.buf)
            l2_reader_init(&rd, s->cs, s->file_size);
        const uint8_t *t;
        int rc = l2_reader_get(s, &rd, s->l1, s->l1_loaded, i, l2, &t);
        if (rc < 0) {
            struct finding f = finding_make(FK_COPIED_L2_READ_ERROR);
            f.err = rc;
            f.offset = l2;
            f.l1_index = i;
            qc2_report(s, &f);
            ret = rc;   /* qemu: check_errors++ and the check fails */
            break;
        }
        uint64_t first = n, last = 0, nfix = 0;   /* patched entries of this table */
        for (uint64_t j = 0; j < n; j++) {
            uint64_t e = be64_get(t + j * esz);
            if (!e)
                continue;
            enum qcow2_cluster_type type = qcow2_l2e_type(&s->geom, e);
            if (type != QCOW2_CLUSTER_NORMAL && type != QCOW2_CLUSTER_ZERO_ALLOC)
                continue;
            uint64_t off = e & QCOW2_L2E_OFFSET_MASK, rc2 = 1;
            bool unreadable;
            if (!qc2_copied_wrong(s, &lk, e, &rc2, &unreadable))
                continue;
            struct finding f = finding_make(FK_COPIED_L2);
            f.l1_index = i;
            f.l2_index = j;
            f.entry = e;
            f.entry_offset = l2 + j * esz;
            f.offset = off;
            f.cluster = off >> s->h.cluster_bits;
            f.guest_offset = (i * n + j) << s->h.cluster_bits;
            f.guest_len = s->cs;
            f.found = rc2;
            f.expected = 1;
            if (repairing)
                f.flags |= FF_REPAIRING;
            qc2_report(s, &f);
            if (repairing && s->fixer) {
                if (!patched)
                    patched = xmalloc((size_t)s->cs);
                if (!nfix)
                    memcpy(patched, t, (size_t)s->cs);
                be64_put(patched + j * esz, rc2 == 1 ? e | QCOW2_OFLAG_COPIED
                                                     : e & ~QCOW2_OFLAG_COPIED);
                first = j < first ? j : first;
                last = j;
                nfix++;
            }
        }
        if (nfix) {
            ret = s->fixer->write_l2_entries(s, l2, patched, first, last - first + 1);
            if (ret < 0) {
                s->res->check_errors++;
                break;
            }
            s->res->corruptions -= (int64_t)nfix;
            s->res->corruptions_fixed += (int64_t)nfix;
            rd.len = 0;   /* another L1 entry may reach this table: read it again */
        }
    }
    free(patched);
    if (rd.buf)
        l2_reader_free(&rd);
    return ret;
}
