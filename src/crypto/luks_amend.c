/* LUKS key slot management: see luks_amend.h. */
#include "crypto/luks_amend.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/secrets.h"
#include "util/xalloc.h"

static int secret(const char *id, unsigned char **pass, size_t *len, char **errmsg)
{
    return secrets_get(id, pass, len, errmsg);
}

static void drop(unsigned char *p, size_t len)
{
    if (p)
        memset(p, 0, len);
    free(p);
}

static unsigned count_active(const struct luks_header *h)
{
    unsigned n = 0;
    for (unsigned i = 0; i < LUKS_NUM_SLOTS; i++)
        n += h->slots[i].active == LUKS_SLOT_ENABLED;
    return n;
}

static bool slot_active(const struct luks_header *h, int i)
{
    return h->slots[i].active == LUKS_SLOT_ENABLED;
}

/* "text\nhint" printed without a final newline, as qemu's error_append_hint without one */
static char *with_hint(char *msg, const char *hint_fmt, int slot)
{
    char hint[64];
    snprintf(hint, sizeof(hint), hint_fmt, slot);
    char *m = xasprintf("%s\n%s%c", msg ? msg : "", hint, LUKS_MSG_NO_NEWLINE);
    free(msg);
    return m;
}

/* qcrypto_block_luks_amend_add_keyslot */
static int add_keyslot(struct luks_header *h, const struct luks_io *io,
                       const struct luks_amend_opts *o, const char *key_secret, bool force,
                       char **errmsg)
{
    uint64_t iter_time = o->has_iter_time ? o->iter_time : LUKS_DEFAULT_ITER_TIME;
    int slot;
    if (!o->new_secret) {
        *errmsg = xstrdup("'new-secret' is required to activate a keyslot");
        return -EINVAL;
    }
    if (o->old_secret) {
        *errmsg = xstrdup("'old-secret' must not be given when activating keyslots");
        return -EINVAL;
    }
    if (o->has_keyslot) {
        slot = o->keyslot;
        if (slot < 0 || slot >= LUKS_NUM_SLOTS) {
            *errmsg = xasprintf("Invalid keyslot %u specified, must be between 0 and %u",
                                (unsigned)slot, LUKS_NUM_SLOTS - 1);
            return -EINVAL;
        }
    } else {
        for (slot = 0; slot < LUKS_NUM_SLOTS && slot_active(h, slot); slot++)
            ;
        if (slot == LUKS_NUM_SLOTS) {
            *errmsg = xstrdup("Can't add a keyslot - all keyslots are in use");
            return -EINVAL;
        }
    }
    if (!force && slot_active(h, slot)) {
        *errmsg = xasprintf("Refusing to overwrite active keyslot %i - please erase it first",
                            slot);
        return -EINVAL;
    }
    unsigned char *old = NULL, *new = NULL;
    size_t old_len = 0, new_len = 0;
    uint8_t *mk = NULL;
    int r;
    if ((r = secret(key_secret, &old, &old_len, errmsg)) < 0)
        return r;
    if ((r = luks_unlock(h, io->read, io->opaque, old, old_len, &mk, errmsg)) < 0) {
        if (r == -EACCES)
            *errmsg = with_hint(*errmsg, "Failed to retrieve the master key", 0);
        goto out;
    }
    if ((r = secret(o->new_secret, &new, &new_len, errmsg)) < 0)
        goto out;
    if ((r = luks_slot_store(h, (unsigned)slot, new, new_len, mk, iter_time, io, errmsg)) < 0)
        *errmsg = with_hint(*errmsg, "Failed to write to keyslot %i", slot);
out:
    if (mk)
        memset(mk, 0, h->key_bytes);
    free(mk);
    drop(old, old_len);
    drop(new, new_len);
    return r;
}

static int erase_one(struct luks_header *h, const struct luks_io *io, int slot, char **errmsg)
{
    int r = luks_slot_erase(h, (unsigned)slot, io, errmsg);
    if (r < 0)
        *errmsg = with_hint(*errmsg, "Failed to erase keyslot %i", slot);
    return r;
}

/* qcrypto_block_luks_amend_erase_keyslots */
static int erase_keyslots(struct luks_header *h, const struct luks_io *io,
                          const struct luks_amend_opts *o, bool force, char **errmsg)
{
    if (o->new_secret) {
        *errmsg = xstrdup("'new-secret' must not be given when erasing keyslots");
        return -EINVAL;
    }
    if (o->has_iter_time) {
        *errmsg = xstrdup("'iter-time' must not be given when erasing keyslots");
        return -EINVAL;
    }
    unsigned char *old = NULL;
    size_t old_len = 0;
    int r;
    if (o->old_secret && (r = secret(o->old_secret, &old, &old_len, errmsg)) < 0)
        return r;
    uint8_t mk[64];
    if (o->has_keyslot) {
        int slot = o->keyslot;
        if (slot < 0 || slot >= LUKS_NUM_SLOTS) {
            *errmsg = xasprintf("Invalid keyslot %i specified, must be between 0 and %i", slot,
                                LUKS_NUM_SLOTS - 1);
            r = -EINVAL;
            goto out;
        }
        if (old) {
            r = luks_slot_try(h, (unsigned)slot, io->read, io->opaque, old, old_len, mk,
                              errmsg);
            if (r < 0)
                goto out;
            if (r == 0) {
                *errmsg = xasprintf("Given keyslot %i doesn't contain the given old password "
                                    "for erase operation", slot);
                r = -EINVAL;
                goto out;
            }
        }
        if (!force && !slot_active(h, slot)) {
            *errmsg = xasprintf("Given keyslot %i is already erased (inactive) ", slot);
            r = -EINVAL;
            goto out;
        }
        if (!force && count_active(h) == 1) {
            *errmsg = xasprintf("Attempt to erase the only active keyslot %i which will erase "
                                "all the data in the image irreversibly - refusing operation",
                                slot);
            r = -EINVAL;
            goto out;
        }
        r = erase_one(h, io, slot, errmsg);
    } else if (old) {
        bool match[LUKS_NUM_SLOTS] = { false };
        unsigned n = 0;
        for (int i = 0; i < LUKS_NUM_SLOTS; i++) {
            r = luks_slot_try(h, (unsigned)i, io->read, io->opaque, old, old_len, mk, errmsg);
            if (r < 0)
                goto out;
            match[i] = r == 1;
            n += match[i];
        }
        if (n == 0) {
            *errmsg = xstrdup("No keyslots match given (old) password for erase operation");
            r = -EINVAL;
            goto out;
        }
        if (!force && n == count_active(h)) {
            *errmsg = xstrdup("All the active keyslots match the (old) password that was "
                              "given and erasing them will erase all the data in the image "
                              "irreversibly - refusing operation");
            r = -EINVAL;
            goto out;
        }
        r = 0;
        for (int i = 0; i < LUKS_NUM_SLOTS && r == 0; i++)
            if (match[i])
                r = erase_one(h, io, i, errmsg);
    } else {
        *errmsg = xstrdup("To erase keyslot(s), either explicit keyslot index or the "
                          "password currently contained in them must be given");
        r = -EINVAL;
    }
out:
    memset(mk, 0, sizeof(mk));
    drop(old, old_len);
    return r;
}

int luks_amend(struct luks_header *h, const struct luks_io *io,
               const struct luks_amend_opts *o, const char *key_secret, bool force,
               char **errmsg)
{
    *errmsg = NULL;
    return o->active ? add_keyslot(h, io, o, key_secret, force, errmsg)
                     : erase_keyslots(h, io, o, force, errmsg);
}
