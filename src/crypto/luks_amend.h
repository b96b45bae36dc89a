/* LUKS key slot management (qemu 7.2's qcrypto_block_luks_amend_options): add a password
 * to a slot (state=active) or erase slots (state=inactive), with qemu's choice of slot,
 * refusals and messages. The slot writes are crypto/luks_key.h's (material, then header,
 * each flushed). */
#ifndef QIMG_CRYPTO_LUKS_AMEND_H
#define QIMG_CRYPTO_LUKS_AMEND_H

#include <stdbool.h>
#include <stdint.h>

#include "crypto/luks_key.h"
#include "format/luks_header.h"

/* qemu's QCryptoBlockAmendOptionsLUKS as qemu-img's -o gives it. */
struct luks_amend_opts {
    bool active;             /* state=active (else inactive) */
    const char *new_secret;  /* secret ids, or NULL */
    const char *old_secret;
    bool has_keyslot;
    int keyslot;             /* qemu keeps it in an int: the option's value truncated */
    bool has_iter_time;
    uint64_t iter_time;      /* ms; qemu's int64 used as uint64 (a negative one is huge) */
};

/* qemu's default iter-time (QCRYPTO_BLOCK_LUKS_DEFAULT_ITER_TIME_MS) */
#define LUKS_DEFAULT_ITER_TIME 2000

/* A message of luks_amend that ends with this character is qemu's error with a hint
 * qemu prints without a final newline ("...\nFailed to write to keyslot 1"): the caller
 * strips it and prints no newline. */
#define LUKS_MSG_NO_NEWLINE '\036'

/* Amends h (decoded, of a volume whose header region io reads and writes). key_secret:
 * the secret id the volume was opened with (unlocks the master key to add a slot); force:
 * qemu-img's --force. 0 or -errno with *errmsg (malloc'd, qemu's text). h follows the
 * disk. */
int luks_amend(struct luks_header *h, const struct luks_io *io,
               const struct luks_amend_opts *o, const char *key_secret, bool force,
               char **errmsg);

#endif
