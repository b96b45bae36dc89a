/* qemu-img's --object secret,id=ID,data=DATA (or file=PATH): the secrets a command was
 * given, looked up by id (qemu's qcrypto_secret_lookup). */
#ifndef QIMG_UTIL_SECRETS_H
#define QIMG_UTIL_SECRETS_H

#include <stdbool.h>
#include <stddef.h>

/* Adds the object described by spec ("secret,id=ID,data=..." as qemu's --object); only
 * secrets are known. 0, or -1 after printing qemu's message (prefix, no file name).
 * "help" and "secret,help" print qemu's lists and exit 0, as qemu-img does. */
int secrets_add_object(const char *spec);

/* Is there a secret with this id? */
bool secrets_have(const char *id);

/* qemu's qcrypto_secret_lookup(): the secret's bytes (base64 decoded when format=base64)
 * into *data (malloc'd, NUL-terminated, *len without it). 0, or -EINVAL with *errmsg
 * (malloc'd) qemu's message ("No secret with id 'X'"). */
int secrets_get(const char *id, unsigned char **data, size_t *len, char **errmsg);

#endif
