/* qio backend on a file reached over SSH/SFTP through libssh (Debian's libssh-4, the library
 * qemu 7.2's block/ssh.c uses): key exchange, host keys, ~/.ssh/config, known_hosts, the
 * ssh-agent and the SFTP protocol are its job, not hand-written here.
 *
 * The order of the steps and every message follow qemu's connect_to_ssh(): resolve and
 * connect (inet_connect_saddr), handshake, check_host_key, authenticate ("none", then
 * publickey through the agent and ~/.ssh keys), sftp_init, sftp_open, fstat. Unlike qemu,
 * the TCP connect and the handshake have a time limit, so an unreachable or silent server
 * cannot hang qimg. */
#include <errno.h>
#include <fcntl.h>
#include <libssh/libssh.h>
#include <libssh/sftp.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/nbd.h" /* QIO_ST_* */
#include "io/ssh.h"
#include "util/dl.h"
#include "util/xalloc.h"

/* libssh is loaded at the first ssh open (dlopen), not linked, as libnbd is (io/nbd.c):
 * it brings libcrypto and gssapi, which a qimg run on plain files need not map. The calls
 * below go through these pointers under libssh's own names. */
#define SSH_FUNCS(X)                                                                        \
    X(ssh_new) X(ssh_free) X(ssh_disconnect) X(ssh_set_blocking) X(ssh_options_set)        \
    X(ssh_options_parse_config) X(ssh_connect) X(ssh_get_error) X(ssh_get_error_code)       \
    X(ssh_session_is_known_server) X(ssh_get_server_publickey) X(ssh_get_publickey_hash)    \
    X(ssh_key_free) X(ssh_key_type) X(ssh_key_type_to_char) X(ssh_get_fingerprint_hash)     \
    X(ssh_string_free_char) X(ssh_clean_pubkey_hash) X(ssh_userauth_none)                   \
    X(ssh_userauth_list) X(ssh_userauth_publickey_auto) X(sftp_new) X(sftp_init)            \
    X(sftp_free) X(sftp_get_error) X(sftp_open) X(sftp_close) X(sftp_fstat)                 \
    X(sftp_attributes_free) X(sftp_seek64) X(sftp_read) X(sftp_write) X(sftp_fsync)         \
    X(sftp_extension_supported) X(sftp_file_set_blocking)

static struct {
    void *dl;
#define DECL(f) __typeof__(&f) p_##f;
    SSH_FUNCS(DECL)
#undef DECL
} L;
#define ssh_new L.p_ssh_new
#define ssh_free L.p_ssh_free
#define ssh_disconnect L.p_ssh_disconnect
#define ssh_set_blocking L.p_ssh_set_blocking
#define ssh_options_set L.p_ssh_options_set
#define ssh_options_parse_config L.p_ssh_options_parse_config
#define ssh_connect L.p_ssh_connect
#define ssh_get_error L.p_ssh_get_error
#define ssh_get_error_code L.p_ssh_get_error_code
#define ssh_session_is_known_server L.p_ssh_session_is_known_server
#define ssh_get_server_publickey L.p_ssh_get_server_publickey
#define ssh_get_publickey_hash L.p_ssh_get_publickey_hash
#define ssh_key_free L.p_ssh_key_free
#define ssh_key_type L.p_ssh_key_type
#define ssh_key_type_to_char L.p_ssh_key_type_to_char
#define ssh_get_fingerprint_hash L.p_ssh_get_fingerprint_hash
#define ssh_string_free_char L.p_ssh_string_free_char
#define ssh_clean_pubkey_hash L.p_ssh_clean_pubkey_hash
#define ssh_userauth_none L.p_ssh_userauth_none
#define ssh_userauth_list L.p_ssh_userauth_list
#define ssh_userauth_publickey_auto L.p_ssh_userauth_publickey_auto
#define sftp_new L.p_sftp_new
#define sftp_init L.p_sftp_init
#define sftp_free L.p_sftp_free
#define sftp_get_error L.p_sftp_get_error
#define sftp_open L.p_sftp_open
#define sftp_close L.p_sftp_close
#define sftp_fstat L.p_sftp_fstat
#define sftp_attributes_free L.p_sftp_attributes_free
#define sftp_seek64 L.p_sftp_seek64
#define sftp_read L.p_sftp_read
#define sftp_write L.p_sftp_write
#define sftp_fsync L.p_sftp_fsync
#define sftp_extension_supported L.p_sftp_extension_supported
#define sftp_file_set_blocking L.p_sftp_file_set_blocking

static int load_libssh(char **errmsg)
{
#define SYM(f) { #f, (void **)&L.p_##f },
    static const struct dl_sym syms[] = { SSH_FUNCS(SYM) };
#undef SYM
    return dl_load(&L.dl, "libssh.so.4", "ssh", "libssh (Debian's libssh-4)", syms,
                   sizeof(syms) / sizeof(syms[0]), errmsg);
}

/* one SFTP request moves at most this much: OpenSSH's sftp-server drops the connection on a
 * packet over 256 KiB (SFTP_MAX_MSG_LENGTH, header included), and libssh sends a write
 * as one packet */
#define SSH_MAX_REQUEST (64u << 10)

struct ssh_state {
    ssh_session session;
    sftp_session sftp;
    sftp_file file;
    uint64_t size; /* qemu keeps attrs->size up to date as writes grow the file */
    bool regular;
};

void qio_ssh_addr_free(struct qio_ssh_addr *a)
{
    if (!a)
        return;
    free(a->host);
    free(a->port);
    free(a->path);
    free(a->user);
    free(a->hkc_type);
    free(a->hkc_hash);
    free(a->legacy_hkc);
    memset(a, 0, sizeof(*a));
}

/* g_get_user_name(): the passwd entry of the real uid, else $USER */
static char *local_user(void)
{
    struct passwd *pw = getpwuid(getuid());
    if (pw && pw->pw_name)
        return xstrdup(pw->pw_name);
    const char *u = getenv("USER");
    return u ? xstrdup(u) : NULL;
}

char *qio_ssh_name(const struct qio_ssh_addr *a)
{
    char *user = a->user ? xstrdup(a->user) : local_user();
    char *n = xasprintf("ssh://%s@%s:%s%s%s%s", user ? user : "", a->host, a->port, a->path,
                        a->legacy_hkc ? "?host_key_check=" : "",
                        a->legacy_hkc ? a->legacy_hkc : "");
    free(user);
    return n;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double connect_limit(void)
{
    const char *t = getenv("QIMG_SSH_CONNECT_TIMEOUT");
    return t && atof(t) > 0 ? atof(t) : 30;
}

/* connect() that gives up after limit seconds; 0 or -errno */
static int connect_bounded(int fd, const struct sockaddr *sa, socklen_t len, double limit)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    int r = connect(fd, sa, len);
    if (r < 0 && errno != EINPROGRESS)
        return -errno;
    if (r < 0) {
        double end = now() + limit;
        for (;;) {
            double left = end - now();
            if (left <= 0)
                return -ETIMEDOUT;
            struct pollfd p = { .fd = fd, .events = POLLOUT };
            int n = poll(&p, 1, left > 1 ? 1000 : (int)(left * 1000) + 1);
            if (n < 0 && errno != EINTR)
                return -errno;
            if (n > 0)
                break;
        }
        int err = 0;
        socklen_t el = sizeof(err);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
            return -errno;
        if (err)
            return -err;
    }
    return fcntl(fd, F_SETFL, fl) < 0 ? -errno : 0;
}

/* qemu's inet_connect_saddr: every address in turn, the last one's error reported */
static int tcp_connect(const struct qio_ssh_addr *a, double limit, char **errmsg)
{
    struct addrinfo hints = { .ai_flags = AI_CANONNAME | AI_V4MAPPED | AI_ADDRCONFIG,
                              .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    struct addrinfo *res = NULL;
    int g = getaddrinfo(a->host, a->port, &hints, &res);
    if (g != 0) {
        *errmsg = xasprintf("address resolution failed for %s:%s: %s", a->host, a->port,
                            gai_strerror(g));
        return -EIO;
    }
    int err = ECONNREFUSED;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int r = connect_bounded(fd, ai->ai_addr, ai->ai_addrlen, limit);
        if (r == 0) {
            freeaddrinfo(res);
            return fd;
        }
        err = -r;
        close(fd);
    }
    freeaddrinfo(res);
    *errmsg = xasprintf("Failed to connect to '%s:%s': %s", a->host, a->port, strerror(err));
    return -EIO;
}

/* qemu's session_error_setg / sftp_error_setg: the text, then libssh's own error */
static char *session_err(struct ssh_state *s, const char *msg)
{
    if (!s->session)
        return xstrdup(msg);
    return xasprintf("%s: %s (libssh error code: %d)", msg, ssh_get_error(s->session),
                     ssh_get_error_code(s->session));
}

static char *sftp_err(struct ssh_state *s, const char *msg)
{
    if (!s->sftp)
        return xstrdup(msg);
    return xasprintf("%s: %s (libssh error code: %d, sftp error code: %d)", msg,
                     ssh_get_error(s->session), ssh_get_error_code(s->session),
                     sftp_get_error(s->sftp));
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* qemu's compare_fingerprint: hex pairs with any ':' between them, nothing after */
static bool fingerprint_matches(const unsigned char *fp, size_t len, const char *want)
{
    for (; len; len--, fp++) {
        while (*want == ':')
            want++;
        if (hexval(want[0]) < 0 || hexval(want[1]) < 0)
            return false;
        if (hexval(want[0]) * 16 + hexval(want[1]) != *fp)
            return false;
        want += 2;
    }
    return *want == '\0';
}

static int check_host_key_hash(struct ssh_state *s, const struct qio_ssh_addr *a,
                               char **errmsg)
{
    enum ssh_publickey_hash_type t = !strcmp(a->hkc_type, "md5")    ? SSH_PUBLICKEY_HASH_MD5
                                     : !strcmp(a->hkc_type, "sha1") ? SSH_PUBLICKEY_HASH_SHA1
                                                                    : SSH_PUBLICKEY_HASH_SHA256;
    ssh_key key = NULL;
    if (ssh_get_server_publickey(s->session, &key) != SSH_OK) {
        *errmsg = session_err(s, "failed to read remote host key");
        return -EINVAL;
    }
    unsigned char *hash = NULL;
    size_t hlen = 0;
    int r = ssh_get_publickey_hash(key, t, &hash, &hlen);
    const char *ktype = ssh_key_type_to_char(ssh_key_type(key));
    ssh_key_free(key);
    if (r != 0) {
        *errmsg = session_err(s, "failed reading the hash of the server SSH key");
        return -EINVAL;
    }
    bool ok = fingerprint_matches(hash, hlen, a->hkc_hash);
    if (!ok) {
        /* the message of Debian's qemu 7.2 (upstream's later one): the server's hash in
         * plain lower-case hex beside the one asked for */
        char *hex = xcalloc(1, 2 * hlen + 1);
        for (size_t i = 0; i < hlen; i++)
            snprintf(hex + 2 * i, 3, "%02x", hash[i]);
        *errmsg = xasprintf("remote host %s key fingerprint '%s:%s' does not match "
                            "host_key_check '%s:%s'", ktype ? ktype : "unknown", a->hkc_type,
                            hex, a->hkc_type, a->hkc_hash);
        free(hex);
    }
    ssh_clean_pubkey_hash(&hash);
    return ok ? 0 : -EPERM;
}

/* qemu's check_host_key_knownhosts: libssh reads ~/.ssh/known_hosts (and the global one) */
static int check_host_key_knownhosts(struct ssh_state *s, char **errmsg)
{
    enum ssh_known_hosts_e st = ssh_session_is_known_server(s->session);
    switch (st) {
    case SSH_KNOWN_HOSTS_OK:
        return 0;
    case SSH_KNOWN_HOSTS_CHANGED: {
        ssh_key key = NULL;
        unsigned char *hash = NULL;
        size_t hlen = 0;
        char *fp = NULL;
        enum ssh_keytypes_e kt = SSH_KEYTYPE_UNKNOWN;
        int r = ssh_get_server_publickey(s->session, &key);
        if (r == 0) {
            r = ssh_get_publickey_hash(key, SSH_PUBLICKEY_HASH_SHA256, &hash, &hlen);
            kt = ssh_key_type(key);
            ssh_key_free(key);
        }
        if (r == 0) {
            fp = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, hlen);
            ssh_clean_pubkey_hash(&hash);
        }
        if (fp) {
            *errmsg = xasprintf("host key (%s key with fingerprint %s) does not match the one "
                                "in known_hosts; this may be a possible attack",
                                ssh_key_type_to_char(kt), fp);
            ssh_string_free_char(fp);
        } else {
            *errmsg = xstrdup("host key does not match the one in known_hosts; this may be a "
                              "possible attack");
        }
        return -EINVAL;
    }
    case SSH_KNOWN_HOSTS_OTHER:
        *errmsg = xstrdup("host key for this server not found, another type exists");
        return -EINVAL;
    case SSH_KNOWN_HOSTS_UNKNOWN:
        *errmsg = xstrdup("no host key was found in known_hosts");
        return -EINVAL;
    case SSH_KNOWN_HOSTS_NOT_FOUND:
        *errmsg = xstrdup("known_hosts file not found");
        return -ENOENT;
    case SSH_KNOWN_HOSTS_ERROR:
        *errmsg = xstrdup("error while checking the host");
        return -EINVAL;
    default:
        *errmsg = xasprintf("error while checking for known server (%d)", (int)st);
        return -EINVAL;
    }
}

static int check_host_key(struct ssh_state *s, const struct qio_ssh_addr *a, char **errmsg)
{
    switch (a->hkc) {
    case QIO_SSH_HKC_NONE:
        return 0;
    case QIO_SSH_HKC_HASH:
        return check_host_key_hash(s, a, errmsg);
    default:
        return check_host_key_knownhosts(s, errmsg);
    }
}

/* qemu's authenticate(): "none" first, then publickey (agent, then ~/.ssh identities) */
static int authenticate(struct ssh_state *s, char **errmsg)
{
    int r = ssh_userauth_none(s->session, NULL);
    if (r == SSH_AUTH_ERROR) {
        *errmsg = session_err(s, "failed to authenticate using none authentication");
        return -EPERM;
    }
    if (r == SSH_AUTH_SUCCESS)
        return 0;
    int method = ssh_userauth_list(s->session, NULL);
    if (method & SSH_AUTH_METHOD_PUBLICKEY) {
        r = ssh_userauth_publickey_auto(s->session, NULL, NULL);
        if (r == SSH_AUTH_ERROR) {
            *errmsg = session_err(s, "failed to authenticate using publickey authentication");
            return -EINVAL;
        }
        if (r == SSH_AUTH_SUCCESS)
            return 0;
    }
    *errmsg = xstrdup("failed to authenticate using publickey authentication and the "
                      "identities held by your ssh-agent");
    return -EPERM;
}

static void state_free(struct ssh_state *s)
{
    if (s->file)
        sftp_close(s->file);
    if (s->sftp)
        sftp_free(s->sftp);
    if (s->session) {
        ssh_disconnect(s->session); /* closes the socket libssh was given */
        ssh_free(s->session);
    }
    free(s);
}

static int s_pread(qio_t *q, void *buf, size_t n, uint64_t off)
{
    struct ssh_state *s = q->priv;
    unsigned char *p = buf;
    if (n && sftp_seek64(s->file, off) < 0)
        return -EIO;
    while (n) {
        size_t k = n < SSH_MAX_REQUEST ? n : SSH_MAX_REQUEST;
        ssize_t r = sftp_read(s->file, p, k);
        if (r < 0)
            return -EIO;
        if (r == 0) { /* qemu's ssh_read: EOF, the rest reads as zeros */
            memset(p, 0, n);
            return 0;
        }
        p += r, n -= (size_t)r;
    }
    return 0;
}

static int s_pwrite(qio_t *q, const void *buf, size_t n, uint64_t off)
{
    struct ssh_state *s = q->priv;
    const unsigned char *p = buf;
    if (n && sftp_seek64(s->file, off) < 0)
        return -EIO;
    uint64_t end = off + n;
    while (n) {
        size_t k = n < SSH_MAX_REQUEST ? n : SSH_MAX_REQUEST;
        ssize_t r = sftp_write(s->file, p, k);
        if (r <= 0)
            return -EIO;
        p += r, n -= (size_t)r;
    }
    if (end > s->size)
        s->size = end;
    return 0;
}

static int s_size(qio_t *q, uint64_t *out)
{
    *out = ((struct ssh_state *)q->priv)->size;
    return 0;
}

/* qemu's ssh_co_truncate: no shrinking; growing writes one zero byte at the new end
 * (ssh_grow_file) */
static int s_truncate(qio_t *q, uint64_t size)
{
    struct ssh_state *s = q->priv;
    if (size < s->size)
        return -ENOTSUP;
    if (size == s->size)
        return 0;
    static const unsigned char zero;
    return s_pwrite(q, &zero, 1, size - 1);
}

/* qemu's ssh_co_flush: fsync@openssh.com when the server has it, else nothing */
static int s_flush(qio_t *q)
{
    struct ssh_state *s = q->priv;
    if (!sftp_extension_supported(s->sftp, "fsync@openssh.com", "1"))
        return 0;
    return sftp_fsync(s->file) < 0 ? -EIO : 0;
}

/* qemu's ssh driver has no block status: everything is data */
static int s_status(qio_t *q, uint64_t off, uint64_t bytes, unsigned *st, uint64_t *pnum)
{
    uint64_t size = ((struct ssh_state *)q->priv)->size;
    *st = QIO_ST_DATA;
    *pnum = off < size ? (bytes < size - off ? bytes : size - off) : 0;
    return 0;
}

static int s_extent(qio_t *q, uint64_t off, bool *is_data, uint64_t *len)
{
    uint64_t size = ((struct ssh_state *)q->priv)->size;
    *is_data = true;
    *len = off < size ? size - off : 0;
    return 0;
}

static int s_allocated(qio_t *q, uint64_t *out)
{
    (void)q, (void)out;
    return -ENOTSUP; /* no bdrv_get_allocated_file_size: "disk size: unavailable" */
}

static void s_close(qio_t *q)
{
    state_free(q->priv);
}

static const struct qio_ops ssh_ops = {
    .pread = s_pread,
    .pwrite = s_pwrite,
    .size = s_size,
    .truncate = s_truncate,
    .flush = s_flush,
    .extent = s_extent,
    .allocated = s_allocated,
    .close = s_close,
    .status = s_status,
};

int qio_open_ssh(const struct qio_ssh_addr *a, int flags, qio_t **out, char **errmsg)
{
    *out = NULL;
    char *user = a->user ? xstrdup(a->user) : local_user();
    if (!user) {
        *errmsg = xasprintf("Can't get user name: %s", strerror(errno ? errno : ENOENT));
        return -EINVAL;
    }
    /* qemu_strtoi(port, NULL, 10): all of it a decimal int */
    char *end;
    errno = 0;
    long port = strtol(a->port, &end, 10);
    if (end == a->port || *end || errno || port < INT_MIN || port > INT_MAX) {
        *errmsg = xstrdup("Use only numeric port value");
        free(user);
        return -EINVAL;
    }
    int rc = load_libssh(errmsg);
    if (rc < 0) {
        free(user);
        return rc;
    }
    double limit = connect_limit();
    int fd = tcp_connect(a, limit, errmsg);
    if (fd < 0) {
        free(user);
        return fd;
    }
    struct ssh_state *s = xcalloc(1, sizeof(*s));
    rc = -EINVAL;
    s->session = ssh_new();
    if (!s->session) {
        *errmsg = xstrdup("failed to initialize libssh session");
        close(fd);
        goto fail;
    }
    ssh_set_blocking(s->session, 1);
    int iport = (int)port;
    long tmo = (long)limit;
    if (ssh_options_set(s->session, SSH_OPTIONS_USER, user) < 0) {
        *errmsg = session_err(s, "failed to set the user in the libssh session");
        close(fd);
        goto fail;
    }
    if (ssh_options_set(s->session, SSH_OPTIONS_HOST, a->host) < 0) {
        *errmsg = session_err(s, "failed to set the host in the libssh session");
        close(fd);
        goto fail;
    }
    if (iport > 0 && ssh_options_set(s->session, SSH_OPTIONS_PORT, &iport) < 0) {
        *errmsg = session_err(s, "failed to set the port in the libssh session");
        close(fd);
        goto fail;
    }
    if (ssh_options_set(s->session, SSH_OPTIONS_COMPRESSION, "none") < 0) {
        *errmsg = session_err(s, "failed to disable the compression in the libssh session");
        close(fd);
        goto fail;
    }
    if (ssh_options_parse_config(s->session, NULL) < 0) {
        *errmsg = session_err(s, "failed to parse ~/.ssh/config");
        close(fd);
        goto fail;
    }
    /* qimg's bound on every blocking wait of the handshake and authentication */
    ssh_options_set(s->session, SSH_OPTIONS_TIMEOUT, &tmo);
    if (ssh_options_set(s->session, SSH_OPTIONS_FD, &fd) < 0) {
        *errmsg = session_err(s, "failed to set the socket in the libssh session");
        close(fd);
        goto fail;
    }
    /* libssh owns the socket from here on */
    if (ssh_connect(s->session) != SSH_OK) {
        *errmsg = session_err(s, "failed to establish SSH session");
        goto fail;
    }
    if ((rc = check_host_key(s, a, errmsg)) < 0)
        goto fail;
    if ((rc = authenticate(s, errmsg)) < 0)
        goto fail;
    rc = -EINVAL;
    s->sftp = sftp_new(s->session);
    if (!s->sftp) {
        *errmsg = session_err(s, "failed to create sftp handle");
        goto fail;
    }
    if (sftp_init(s->sftp) < 0) {
        *errmsg = sftp_err(s, "failed to initialize sftp handle");
        goto fail;
    }
    s->file = sftp_open(s->sftp, a->path, (flags & QIO_RDWR) ? O_RDWR : O_RDONLY, 0);
    if (!s->file) {
        char *m = xasprintf("failed to open remote file '%s'", a->path);
        *errmsg = sftp_err(s, m);
        free(m);
        goto fail;
    }
    sftp_file_set_blocking(s->file);
    sftp_attributes at = sftp_fstat(s->file);
    if (!at) {
        *errmsg = sftp_err(s, "failed to read file attributes");
        goto fail;
    }
    s->size = at->size;
    s->regular = at->type == SSH_FILEXFER_TYPE_REGULAR;
    sftp_attributes_free(at);
    free(user);
    qio_t *q = xcalloc(1, sizeof(*q));
    q->ops = &ssh_ops;
    q->fd = -1;
    q->writable = flags & QIO_RDWR;
    q->path = qio_ssh_name(a);
    q->priv = s;
    q->align = 1;
    *out = q;
    return 0;
fail:
    free(user);
    state_free(s);
    return rc;
}

bool qio_is_ssh(const qio_t *q)
{
    return q && q->ops == &ssh_ops;
}
