/* VDI check, qemu 7.2's vdi_co_check(): every allocated block map entry must be below
 * blocks_in_image and used once, and their number must equal the header's
 * blocks_allocated. Findings use l1_index for the guest block (the map index) and entry
 * for the physical block.
 *
 * qemu keeps a blocks_in_image-sized "seen" array; we find repeats by sorting the entries
 * the file really holds, so memory follows the file size. Entries past EOF read as 0
 * (qemu's zero-filled read), i.e. all "allocated at block 0". */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/vdi_int.h"
#include "checker/blk_check.h"
#include "util/xalloc.h"

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Bitmap over stored positions: which ones repeat an earlier entry. */
static uint8_t *find_repeats(const struct vdi_state *s, bool *zero_used)
{
    uint32_t n = s->n_stored;
    uint8_t *rep = xcalloc((size_t)n / 8 + 1, 1);
    uint64_t *v = xmalloc(((size_t)n + 1) * sizeof(uint64_t));
    size_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t e = s->bmap[i];
        if (VDI_IS_ALLOCATED(e) && e < s->h.blocks_in_image)
            v[k++] = (uint64_t)e << 32 | i;
    }
    qsort(v, k, sizeof(v[0]), cmp_u64);
    *zero_used = k > 0 && (v[0] >> 32) == 0;
    for (size_t j = 1; j < k; j++) {
        if ((v[j] >> 32) == (v[j - 1] >> 32)) {
            uint32_t pos = (uint32_t)v[j];
            rep[pos / 8] |= (uint8_t)(1u << (pos % 8));
        }
    }
    free(v);
    return rep;
}

int vdi_check_pass(image_t *img, unsigned fix, struct check_run *run)
{
    if (fix)
        return -ENOTSUP;
    const struct vdi_state *s = img->priv;
    const struct vdi_header *h = &s->h;
    bool zero_used;
    uint8_t *rep = find_repeats(s, &zero_used);
    uint32_t counted = 0;
    for (uint64_t b = 0; b < h->blocks_in_image; b++) {
        uint32_t e = vdi_entry(s, b);
        if (!VDI_IS_ALLOCATED(e))
            continue;
        struct finding f;
        if (e < h->blocks_in_image) {
            counted++;
            bool repeat;
            if (b < s->n_stored) {
                repeat = rep[b / 8] & (1u << (b % 8));
            } else { /* a virtual 0 entry: repeats unless it is the first 0 */
                repeat = zero_used;
                zero_used = true;
            }
            if (!repeat)
                continue;
            f = finding_make(FK_VDI_BLOCK_SHARED);
        } else {
            f = finding_make(FK_VDI_BLOCK_TOO_LARGE);
            f.expected = h->blocks_in_image;
        }
        f.l1_index = b;
        f.entry = e;
        f.entry_offset = (uint64_t)h->offset_bmap + b * 4;
        f.guest_offset = b * h->block_size;
        f.guest_len = h->block_size;
        if (e < h->blocks_in_image) {
            f.cluster = e;
            f.offset = vdi_block_offset(h, e, 0);
        }
        findings_add(&run->findings, &f);
        run->res.corruptions++;
    }
    free(rep);
    if (counted != h->blocks_allocated) {
        struct finding f = finding_make(FK_VDI_ALLOC_MISMATCH);
        f.found = counted;
        f.expected = h->blocks_allocated;
        f.entry_offset = VDI_OFF_ALLOCATED;
        findings_add(&run->findings, &f);
        run->res.corruptions++;
    }
    return 0;
}
