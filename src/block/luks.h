/* LUKS metadata shared by the luks driver and qcow2's LUKS encryption (info only). */
#ifndef QIMG_BLOCK_LUKS_H
#define QIMG_BLOCK_LUKS_H

#include <stdint.h>

#include "format/luks_header.h"
#include "block/image.h"
#include "io/qio.h"
#include "util/json.h"

/* qemu's message when a LUKS volume is opened for I/O without a key-secret. */
#define LUKS_NO_KEY_MSG "Parameter 'key-secret' is required for cipher"

/* Reads the header at off (zeros past EOF) and validates it as qemu's NO_IO open does.
 * On failure *errmsg (malloc'd) is qemu's message and -errno is returned. */
int luks_read_header(qio_t *q, uint64_t off, struct luks_header *h, char **errmsg);

/* The key of an encrypted image: the secret named by img->key_secret unlocks the LUKS
 * header h (whose bytes rd reads, relative to the header) into a sector cipher. 0, or
 * -errno with qemu's message ("Parameter 'key-secret' is required for cipher" with
 * missing_msg, "No secret with id 'X'", "Invalid password, cannot unlock any keyslot"). */
struct qcrypt;
int luks_open_key(const char *key_secret, const char *missing_msg,
                  const struct luks_header *h,
                  int (*rd)(void *, uint64_t, void *, size_t, char **), void *opaque,
                  struct qcrypt **c, char **errmsg);

/* qcrypto_block_qcow_init, for qcow and qcow2's legacy AES: the secret's first 16 bytes
 * (zero padded) as an aes-128-cbc key with plain64 IVs. 0, or -errno with qemu's message
 * (missing_msg without a key-secret). */
int qcow_aes_open_key(const char *key_secret, const char *missing_msg, struct qcrypt **c,
                      char **errmsg);

/* qcow's and qcow2's check of the encrypt.format option against the header's method
 * ("aes" or "luks", NULL: not encrypted), made by every open, info's too: 0, or -EINVAL
 * with qemu's message. */
int crypt_format_check(const char *given, const char *header, char **errmsg);

/* qemu's QCryptoBlockInfoLUKS as info shows it (qcrypto_block_luks_get_info); format, if
 * not NULL, is the discriminator of qcow2's encrypt union ("luks"). */
json_t *luks_info_json(const struct luks_header *h, const char *format);

/* The decoded header of a luks-format image (the luks driver's), for amend. */
struct luks_header *luks_image_header(image_t *img);

/* qemu's block_crypto_amend_opts_init: the amend options (keys with prefix, "" for the
 * luks format, "encrypt." inside qcow2) as qemu's QAPI visitor reads them into
 * QCryptoBlockAmendOptionsLUKS: 0, or -EINVAL with its message ("Parameter 'state' is
 * missing", ... does not accept value ..., ... expects integer). */
struct copts;
struct luks_amend_opts;
int luks_amend_opts_read(const struct copts *o, const char *prefix,
                         struct luks_amend_opts *out, char **errmsg);

/* qemu's block_crypto_amend_options_luks: the keyslot update of a luks-format image
 * (options without prefix), the header region written through the image file. */
int luks_format_amend(image_t *img, const struct copts *o, bool force, char **errmsg);

#endif
