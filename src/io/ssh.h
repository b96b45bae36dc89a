/* qio backend on a file reached over SSH/SFTP, through libssh (qemu 7.2's block/ssh.c as
 * qimg needs it: connect, host key check, public key authentication, sftp read, write,
 * grow, flush and size). */
#ifndef QIMG_IO_SSH_H
#define QIMG_IO_SSH_H

#include "io/qio.h"

enum qio_ssh_hkc { QIO_SSH_HKC_KNOWN_HOSTS, QIO_SSH_HKC_NONE, QIO_SSH_HKC_HASH };

/* qemu's BlockdevOptionsSsh after ssh_process_legacy_options. */
struct qio_ssh_addr {
    char *host;           /* server.host */
    char *port;           /* server.port, text as given ("22" by default) */
    char *path;           /* the remote file */
    char *user;           /* NULL: the local user name */
    enum qio_ssh_hkc hkc; /* host-key-check.mode (known_hosts when not given) */
    char *hkc_type;       /* hash: "md5", "sha1" or "sha256" */
    char *hkc_hash;       /* hash: hex digits, ':' separators allowed */
    char *legacy_hkc;     /* the host_key_check option as given (shown in the name), or NULL */
};

void qio_ssh_addr_free(struct qio_ssh_addr *a);

/* qemu's ssh_refresh_filename(): "ssh://USER@HOST:PORT/PATH[?host_key_check=X]". */
char *qio_ssh_name(const struct qio_ssh_addr *a);

/* Connects (TCP connect and SSH handshake each bounded by QIMG_SSH_CONNECT_TIMEOUT seconds,
 * 30 by default), checks the host key, authenticates and opens the file over SFTP. On
 * failure returns -errno and sets *errmsg to qemu's text, e.g. "Failed to connect to
 * 'localhost:0': Connection refused". */
int qio_open_ssh(const struct qio_ssh_addr *a, int flags, qio_t **out, char **errmsg);

bool qio_is_ssh(const qio_t *q);

#endif
