/* Sector encryption as qemu's crypto/block.c does it for LUKS and qcow's legacy AES: a block
 * cipher (nettle) in a mode (ecb, cbc, xts, ctr), one IV per 512-byte sector from an IV
 * generator (plain, plain64, essiv:HASH). The ciphers are nettle's; this file only wires
 * them to qemu's names and sector layout. */
#ifndef QIMG_CRYPTO_SECTOR_H
#define QIMG_CRYPTO_SECTOR_H

#include <stddef.h>
#include <stdint.h>

#define QCRYPT_SECTOR 512u

typedef struct qcrypt qcrypt_t;

/* alg: "aes-128|192|256", "serpent-*", "twofish-*"; mode: "ecb", "cbc", "xts", "ctr";
 * ivgen: "plain", "plain64", "essiv"; ivhash: essiv's hash ("sha256"), else ignored. key is
 * the cipher key (two of them for xts). NULL with *errmsg (malloc'd) when unsupported. */
qcrypt_t *qcrypt_new(const char *alg, const char *mode, const char *ivgen, const char *ivhash,
                     const uint8_t *key, size_t keylen, char **errmsg);
void qcrypt_free(qcrypt_t *c);

/* In place over len bytes (a multiple of 512); sector is the number of the first 512-byte
 * sector (its IV). */
void qcrypt_decrypt(qcrypt_t *c, uint64_t sector, uint8_t *buf, size_t len);
void qcrypt_encrypt(qcrypt_t *c, uint64_t sector, uint8_t *buf, size_t len);

/* nettle's hash by qemu's QCryptoHashAlgorithm name, or NULL. */
const struct nettle_hash *qcrypt_hash(const char *name);

/* PBKDF2-HMAC-hash (nettle's pbkdf2) of pass/salt into out[outlen]. */
void qcrypt_pbkdf2(const struct nettle_hash *h, const uint8_t *pass, size_t passlen,
                   const uint8_t *salt, size_t saltlen, unsigned iters, uint8_t *out,
                   size_t outlen);

/* Random bytes for keys and salts (getrandom). 0 or -errno. */
int qcrypt_random(uint8_t *buf, size_t len);

#endif
