#include "io/lock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "util/xalloc.h"

#define PERM_BASE   100
#define SHARED_BASE 200

enum { PERM_READ = 0, PERM_WRITE = 1, PERM_RESIZE = 3 };

static const char *perm_name(int bit)
{
    return bit == PERM_READ ? "consistent read" : bit == PERM_WRITE ? "write" : "resize";
}

/* Is byte off locked by another open file description? */
static int held_by_other(int fd, off_t off, bool *held)
{
    struct flock fl;
    memset(&fl, 0, sizeof(fl));
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = off;
    fl.l_len = 1;
    if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
        return -errno;
    *held = fl.l_type != F_UNLCK;
    return 0;
}

static int lock_shared(int fd, off_t off)
{
    struct flock fl;
    memset(&fl, 0, sizeof(fl));
    fl.l_type = F_RDLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = off;
    fl.l_len = 1;
    return fcntl(fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

int qio_lock_for_repair(qio_t *q, const char **perm)
{
    static const int mine[] = { PERM_READ, PERM_WRITE, PERM_RESIZE };
    static const int unshared[] = { PERM_WRITE, PERM_RESIZE };
    *perm = "write";
    if (q->fd < 0)
        return 0;
    bool held;
    int rc;
    /* someone refuses to share a permission we need */
    for (size_t i = 0; i < sizeof(mine) / sizeof(mine[0]); i++) {
        if ((rc = held_by_other(q->fd, SHARED_BASE + mine[i], &held)) < 0)
            return rc == -EINVAL ? 0 : rc;   /* no OFD locks here: nothing to honour */
        if (held) {
            *perm = perm_name(mine[i]);
            return -EBUSY;
        }
    }
    /* someone holds a permission we do not share */
    for (size_t i = 0; i < sizeof(unshared) / sizeof(unshared[0]); i++) {
        if ((rc = held_by_other(q->fd, PERM_BASE + unshared[i], &held)) < 0)
            return rc;
        if (held) {
            *perm = perm_name(unshared[i]);
            return -EBUSY;
        }
    }
    for (size_t i = 0; i < sizeof(mine) / sizeof(mine[0]); i++)
        if ((rc = lock_shared(q->fd, PERM_BASE + mine[i])) < 0)
            return rc == -EAGAIN ? -EBUSY : rc;
    for (size_t i = 0; i < sizeof(unshared) / sizeof(unshared[0]); i++)
        if ((rc = lock_shared(q->fd, SHARED_BASE + unshared[i])) < 0)
            return rc == -EAGAIN ? -EBUSY : rc;
    return 0;
}

int qio_lock_perms(qio_t *q, unsigned perm, unsigned unshared, const char **name, bool *shared)
{
    *name = "write";
    *shared = false;
    if (q->fd < 0)
        return 0;
    bool held;
    int rc;
    for (int i = 0; i <= PERM_RESIZE; i++) {
        if (!(perm & (1u << i)))
            continue;
        if ((rc = held_by_other(q->fd, SHARED_BASE + i, &held)) < 0)
            return rc == -EINVAL ? 0 : rc;   /* no OFD locks here: nothing to honour */
        if (held) {
            *name = perm_name(i);
            return -EBUSY;
        }
    }
    for (int i = 0; i <= PERM_RESIZE; i++) {
        if (!(unshared & (1u << i)))
            continue;
        if ((rc = held_by_other(q->fd, PERM_BASE + i, &held)) < 0)
            return rc == -EINVAL ? 0 : rc;
        if (held) {
            *name = perm_name(i);
            *shared = true;
            return -EBUSY;
        }
    }
    for (int i = 0; i <= PERM_RESIZE; i++) {
        if ((perm & (1u << i)) && (rc = lock_shared(q->fd, PERM_BASE + i)) < 0)
            return rc == -EAGAIN ? -EBUSY : rc == -EINVAL ? 0 : rc;
        if ((unshared & (1u << i)) && (rc = lock_shared(q->fd, SHARED_BASE + i)) < 0)
            return rc == -EAGAIN ? -EBUSY : rc == -EINVAL ? 0 : rc;
    }
    return 0;
}

char *qio_lock_msg(const char *name, bool shared, const char *filename)
{
    return xasprintf("Failed to get %s\"%s\" lock\nIs another process using the image [%s]?",
                     shared ? "shared " : "", name, filename);
}

/* qio_lock_perms, with qemu's message on a conflict (or a failed lock) in *errmsg. */
static int lock_or_explain(qio_t *q, unsigned perm, unsigned unshared, const char *filename,
                           char **errmsg)
{
    const char *name;
    bool shared;
    int rc = qio_lock_perms(q, perm, unshared, &name, &shared);
    if (rc == -EBUSY)
        *errmsg = qio_lock_msg(name, shared, filename);
    else if (rc < 0)
        *errmsg = xasprintf("Failed to lock byte: %s", strerror(-rc));
    return rc;
}

int qio_lock_image(qio_t *q, bool rdwr, bool metadata, bool force_share, const char *filename,
                   char **errmsg)
{
    /* qemu-io -f raw (read-write) holds read+write only; qcow2 also resize */
    unsigned perm = QIO_PERM_READ | (rdwr ? QIO_PERM_WRITE : 0) |
                    (rdwr && metadata ? QIO_PERM_RESIZE : 0);
    unsigned unshared = metadata && !force_share ? QIO_PERM_WRITE | QIO_PERM_RESIZE : 0;
    return lock_or_explain(q, perm, unshared, filename, errmsg);
}

int qio_lock_data_file(qio_t *q, bool rdwr, bool force_share, const char *filename,
                       char **errmsg)
{
    /* qemu's data child: the parent's permissions (writers may also grow it), and only
     * resizing unshared: the format's metadata assumes the size; others may write */
    unsigned perm = QIO_PERM_READ | (rdwr ? QIO_PERM_WRITE | QIO_PERM_RESIZE : 0);
    unsigned unshared = force_share ? 0 : QIO_PERM_RESIZE;
    return lock_or_explain(q, perm, unshared, filename, errmsg);
}
