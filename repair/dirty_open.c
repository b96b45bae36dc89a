/* The repair of a dirty image at a read-write open (see qcow2/dirty_repair.h): `check -r
 * all`'s engine (repair/inplace.h) without its report, its journal or its crash guard. */
#include "qcow2/dirty_repair.h"

#include <errno.h>
#include <string.h>

#include "format/be.h"
#include "format/qcow2_header.h"
#include "repair/inplace.h"

int repair_dirty_on_open(qio_t *q, const char *filename, bool *consistent)
{
    /* the caller holds the image's, data file's and backing chain's locks: the check's
     * own opens of them share (qemu's check runs inside the open node) */
    struct check_opts o = { .share = true, .no_open_warnings = true,
                            .fix = CHECK_FIX_LEAKS | CHECK_FIX_ERRORS };
    uint8_t hb[QCOW2_HDR_V3_LEN];
    *consistent = false;
    memset(hb, 0, sizeof(hb));
    int rc = qio_pread(q, hb, sizeof(hb), 0);
    if (rc < 0)
        return rc;
    uint32_t version = be32_get(hb + QCOW2_OFF_VERSION), cb = be32_get(hb + QCOW2_OFF_CLUSTER_BITS);
    if (version < 3 || cb < QCOW2_MIN_CLUSTER_BITS || cb > QCOW2_MAX_CLUSTER_BITS)
        return -EINVAL; /* only a v3 image has a dirty bit; the open validated it */

    /* qemu clears the dirty bit when its fixing pass leaves no corruption; qimg judges the
     * image as it is after the writes, as `check -r` does, quietly */
    struct check_opts co = o;
    co.fix = 0;
    co.quiet_diag = true;
    /* no corrupt-bit guard here (unlike `check -r`): the dirty bit stays set until the
     * repair is done, so after a crash the next read-write open repairs again, as qemu's
     * does; a corrupt bit would instead lock qemu out of the image */
    struct repair_inplace_opts ro = {
        .check = &o, .recheck = &co, .recheck_always = true, .fix = o.fix,
        .stop_on_check_errors = true,   /* qemu fails the open so, whatever its check fixed */
    };
    struct repair_inplace r;
    repair_inplace(q, filename, &ro, &r);
    rc = r.rc;
    *consistent = r.stage == RIP_DONE && r.consistent;
    repair_inplace_free(&r);
    return rc;
}
