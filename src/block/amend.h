/* Image option amendment (qemu's bdrv_amend_options): qcow2 (qcow2_amend.c, qemu 7.2's
 * qcow2_amend_options, encrypt.* LUKS keyslots included) and luks (luks_amend.c). The options come parsed from -o as the
 * amend option list (block/create_opts.h struct copts, in qemu's desc order: the order in
 * which qemu looks at them and so the order of its refusals). */
#ifndef QIMG_BLOCK_AMEND_H
#define QIMG_BLOCK_AMEND_H

#include <stdbool.h>
#include <stdint.h>

#include "block/create_opts.h"
#include "block/image.h"

/* qemu's BlockDriverAmendStatusCB: offset of total_work_size done. */
typedef void (*amend_status_fn)(void *opaque, int64_t offset, int64_t total);

/* The amend option list of fmt (qcow2: qemu's qcow2_amend_opts; luks:
 * block_crypto_amend_opts_luks) in desc order; with create, followed by the format's
 * creation options amend does not take (qemu's retry that tells "This option is only
 * supported for image creation"). */
void amend_opts_init(struct copts *o, const char *fmt, bool with_create);

/* Does the format (driver name) support amendment? (qcow2, luks) */
bool amend_format_supported(const char *fmt);

/* qemu's bdrv_amend_options on img (open read-write, with its key for LUKS): qcow2's
 * qcow2_amend_options or luks' block_crypto_amend_options_luks. 0, or -errno with *errmsg
 * (malloc'd, qemu's text, possibly with a hint line after a newline; ending in
 * LUKS_MSG_NO_NEWLINE (crypto/luks_amend.h) when qemu prints the hint without a final
 * newline). force is qemu-img's --force (LUKS keyslot updates). */
int image_amend(image_t *img, const struct copts *o, bool force, amend_status_fn cb,
                void *opaque, char **errmsg);

#endif
