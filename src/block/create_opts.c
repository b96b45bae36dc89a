/* Creation option lists and parsing with qemu 7.2's QemuOpts behaviour (util/qemu-option.c:
 * opts_do_parse, qemu_opts_print, qemu_opts_print_help; block.c bdrv_img_create). */
#include "block/create_opts.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "util/size.h"
#include "util/xalloc.h"

/* Each list in the order of the driver's create_opts desc[] (qemu_opts_print order). */
static const struct copt_desc qcow2_opts[] = {
    { "encryption", COPT_BOOL,
      "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)", NULL },
    { "encrypt.format", COPT_STR, "Encrypt the image, format choices: 'aes', 'luks'", NULL },
    { "encrypt.key-secret", COPT_STR, "ID of secret providing qcow AES key or LUKS passphrase",
      NULL },
    { "encrypt.cipher-alg", COPT_STR, "Name of encryption cipher algorithm", NULL },
    { "encrypt.cipher-mode", COPT_STR, "Name of encryption cipher mode", NULL },
    { "encrypt.ivgen-alg", COPT_STR, "Name of IV generator algorithm", NULL },
    { "encrypt.ivgen-hash-alg", COPT_STR, "Name of IV generator hash algorithm", NULL },
    { "encrypt.hash-alg", COPT_STR, "Name of encryption hash algorithm", NULL },
    { "encrypt.iter-time", COPT_NUM, "Time to spend in PBKDF in milliseconds", NULL },
    { "cluster_size", COPT_SIZE, "qcow2 cluster size", "65536" },
    { "extended_l2", COPT_BOOL, "Extended L2 tables", "off" },
    { "preallocation", COPT_STR,
      "Preallocation mode (allowed values: off, metadata, falloc, full)", NULL },
    { "compression_type", COPT_STR, "Compression method used for image cluster compression",
      "zlib" },
    { "size", COPT_SIZE, "Virtual disk size", NULL },
    { "compat", COPT_STR, "Compatibility level (v2 [0.10] or v3 [1.1])", NULL },
    { "backing_file", COPT_STR, "File name of a base image", NULL },
    { "backing_fmt", COPT_STR, "Image format of the base image", NULL },
    { "data_file", COPT_STR, "File name of an external data file", NULL },
    { "data_file_raw", COPT_BOOL, "The external data file must stay valid as a raw image",
      NULL },
    { "lazy_refcounts", COPT_BOOL, "Postpone refcount updates", "off" },
    { "refcount_bits", COPT_NUM, "Width of a reference count entry in bits", "16" },
    { NULL, 0, NULL, NULL },
};

static const struct copt_desc raw_opts[] = {
    { "size", COPT_SIZE, "Virtual disk size", NULL },
    { NULL, 0, NULL, NULL },
};

static const struct copt_desc qed_opts[] = {
    { "size", COPT_SIZE, "Virtual disk size", NULL },
    { "backing_file", COPT_STR, "File name of a base image", NULL },
    { "backing_fmt", COPT_STR, "Image format of the base image", NULL },
    { "cluster_size", COPT_SIZE, "Cluster size (in bytes)", "65536" },
    { "table_size", COPT_SIZE, "L1/L2 table size (in clusters)", NULL },
    { NULL, 0, NULL, NULL },
};

/* block/crypto.c's block_crypto_create_opts_luks */
static const struct copt_desc luks_opts[] = {
    { "size", COPT_SIZE, "Virtual disk size", NULL },
    { "key-secret", COPT_STR, "ID of the secret that provides the keyslot passphrase", NULL },
    { "cipher-alg", COPT_STR, "Name of encryption cipher algorithm", NULL },
    { "cipher-mode", COPT_STR, "Name of encryption cipher mode", NULL },
    { "ivgen-alg", COPT_STR, "Name of IV generator algorithm", NULL },
    { "ivgen-hash-alg", COPT_STR, "Name of IV generator hash algorithm", NULL },
    { "hash-alg", COPT_STR, "Name of encryption hash algorithm", NULL },
    { "iter-time", COPT_NUM, "Time to spend in PBKDF in milliseconds", NULL },
    { NULL, 0, NULL, NULL },
};

static const struct copt_desc vdi_opts[] = {
    { "size", COPT_SIZE, "Virtual disk size", NULL },
    { "static", COPT_BOOL, "VDI static (pre-allocated) image", "off" },
    { NULL, 0, NULL, NULL },
};

/* file-posix's raw_create_opts */
static const struct copt_desc file_opts[] = {
    { "size", COPT_SIZE, "Virtual disk size", NULL },
    { "nocow", COPT_BOOL, "Turn off copy-on-write (valid only on btrfs)", NULL },
    { "preallocation", COPT_STR, "Preallocation mode (allowed values: off, falloc, full)", NULL },
    { "extent_size_hint", COPT_SIZE, "Extent size hint for the image file, 0 to disable", NULL },
    { NULL, 0, NULL, NULL },
};

static const struct copt_desc *format_list(const char *fmt)
{
    if (!fmt)
        return NULL;
    if (!strcmp(fmt, "qcow2"))
        return qcow2_opts;
    if (!strcmp(fmt, "raw"))
        return raw_opts;
    if (!strcmp(fmt, "qed"))
        return qed_opts;
    if (!strcmp(fmt, "vdi"))
        return vdi_opts;
    if (!strcmp(fmt, "luks"))
        return luks_opts;
    return NULL;
}

bool copts_format_known(const char *fmt)
{
    return format_list(fmt) != NULL;
}

bool copts_format_no_create(const char *fmt)
{
    static const char *const no_create[] = {
        "bochs", "cloop", "dmg", "null-co", "null-aio", "vvfat", "blkdebug", "throttle",
        "quorum", "replication", "preallocate", "compress", "copy-on-read",
        "copy-before-write", "snapshot-access", "blklogwrites", "blkverify", NULL,
    };
    for (size_t i = 0; no_create[i]; i++)
        if (!strcmp(no_create[i], fmt))
            return true;
    return false;
}

static int find(const struct copts *o, const char *name)
{
    for (size_t i = 0; i < o->n; i++)
        if (!strcmp(o->desc[i]->name, name))
            return (int)i;
    return -1;
}

/* qemu_opts_append: later lists add only names not yet present */
static void append(struct copts *o, const struct copt_desc *d)
{
    for (; d->name; d++)
        if (find(o, d->name) < 0 && o->n < COPTS_MAX)
            o->desc[o->n++] = d;
}

int copts_init(struct copts *o, const char *fmt, bool with_protocol)
{
    const struct copt_desc *l = format_list(fmt);
    memset(o, 0, sizeof(*o));
    if (!l)
        return -1;
    o->fmt = fmt;
    append(o, l);
    if (with_protocol)
        append(o, file_opts);
    return 0;
}

void copts_free(struct copts *o)
{
    for (size_t i = 0; i < o->n; i++) {
        free(o->str[i]);
        o->str[i] = NULL;
    }
}

/* Next element of a QemuOpts string with ",," unescaped; returns the rest or NULL at end. */
static const char *next_elem(const char *p, char **out)
{
    size_t cap = strlen(p) + 1, n = 0;
    char *buf = xmalloc(cap);
    while (*p) {
        if (*p == ',') {
            if (p[1] != ',')
                break;
            p++;
        }
        buf[n++] = *p++;
    }
    buf[n] = 0;
    *out = buf;
    return *p == ',' ? p + 1 : p;
}

/* qemu's has_help_option: an element "help" or "?" without a value ("help=1" is an
 * unknown parameter) */
bool copts_has_help(const char *optstr)
{
    const char *p = optstr;
    while (*p) {
        size_t len = strcspn(p, "=,");
        if (((len == 4 && !strncmp(p, "help", 4)) || (len == 1 && p[0] == '?')) &&
            p[len] != '=')
            return true;
        p += len;
        if (*p == '=') {
            char *v;
            p = next_elem(p + 1, &v);
            free(v);
        } else if (*p == ',') {
            p++;
        }
    }
    return false;
}

static const char *type_name(enum copt_type t)
{
    switch (t) {
    case COPT_BOOL: return "bool (on/off)";
    case COPT_NUM: return "num";
    case COPT_SIZE: return "size";
    default: return "str";
    }
}

static int cmp_desc(const void *a, const void *b)
{
    return strcmp((*(const struct copt_desc *const *)a)->name,
                  (*(const struct copt_desc *const *)b)->name);
}

void copts_print_help(const char *fmt, bool with_filename)
{
    struct copts o;
    if (copts_init(&o, fmt, with_filename) < 0)
        return;
    qsort(o.desc, o.n, sizeof(o.desc[0]), cmp_desc);
    if (with_filename)
        printf("Supported options:\n");
    else
        printf("Supported %s options:\n", fmt);
    for (size_t i = 0; i < o.n; i++) {
        char left[128];
        snprintf(left, sizeof(left), "%s=<%s>", o.desc[i]->name, type_name(o.desc[i]->type));
        if (o.desc[i]->help)
            printf("  %-22s - %s\n", left, o.desc[i]->help);
        else
            printf("  %s\n", left);
    }
    if (!with_filename)
        printf("\nThe protocol level may support further options.\n"
               "Specify the target filename to include those options.\n");
}

/* qapi_bool_parse */
static int parse_bool(const char *v, uint64_t *out)
{
    static const char *const on[] = { "on", "yes", "true", "y" };
    static const char *const off[] = { "off", "no", "false", "n" };
    for (int i = 0; i < 4; i++) {
        if (!strcmp(v, on[i])) {
            *out = 1;
            return 0;
        }
        if (!strcmp(v, off[i])) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

/* qemu_strtou64(v, NULL, 0): leading spaces and '-' allowed (negation wraps), whole string */
static int parse_u64(const char *v, uint64_t *out)
{
    const char *p = v;
    while (*p == ' ' || (*p >= '\t' && *p <= '\r'))
        p++;
    if (!*p)
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long long r = strtoull(v, &end, 0);
    if (end == v || *end)
        return -EINVAL;
    if (errno == ERANGE)
        return -ERANGE;
    *out = r;
    return 0;
}

static int parse_value(const struct copt_desc *d, const char *v, uint64_t *out, char *err,
                       size_t errlen)
{
    int r;
    switch (d->type) {
    case COPT_BOOL:
        if (parse_bool(v, out) < 0) {
            snprintf(err, errlen, "Parameter '%s' expects 'on' or 'off'", d->name);
            return -1;
        }
        return 0;
    case COPT_NUM:
        r = parse_u64(v, out);
        if (r == -ERANGE) {
            snprintf(err, errlen, "Value '%s' is too large for parameter '%s'", v, d->name);
            return -1;
        }
        if (r < 0) {
            snprintf(err, errlen, "Parameter '%s' expects a number", d->name);
            return -1;
        }
        return 0;
    case COPT_SIZE:
        r = parse_size_ex(v, out);
        if (r == -ERANGE) {
            snprintf(err, errlen, "Value '%s' is out of range for parameter '%s'", v, d->name);
            return -1;
        }
        if (r < 0) {
            snprintf(err, errlen,
                     "Parameter '%s' expects a non-negative number below 2^64\n"
                     "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
                     "and exabytes, respectively.", d->name);
            return -1;
        }
        return 0;
    default:
        *out = 0;
        return 0;
    }
}

/* qemu's get_opt_name_value: the name runs to the first '=' or ',' (no escapes); a value
 * after '=' runs to the first single ',' with ",," meaning ','. */
int copts_parse(struct copts *o, const char *optstr, char *err, size_t errlen)
{
    const char *p = optstr;
    while (*p) {
        size_t len = strcspn(p, "=,");
        char *name = xmalloc(len + 1), *value;
        memcpy(name, p, len);
        name[len] = 0;
        p += len;
        if (*p == '=') {
            p = next_elem(p + 1, &value);
        } else {
            if (*p == ',')
                p++;
            if (!strcmp(name, "help") || !strcmp(name, "?")) {
                free(name);
                continue;
            }
            if (!strncmp(name, "no", 2)) {
                memmove(name, name + 2, len - 1);
                value = xstrdup("off");
            } else {
                value = xstrdup("on");
            }
        }
        int i = find(o, name);
        uint64_t v = 0;
        if (i < 0)
            snprintf(err, errlen, "Invalid parameter '%s'", name);
        if (i < 0 || parse_value(o->desc[i], value, &v, err, errlen) < 0) {
            free(name);
            free(value);
            return -1;
        }
        free(o->str[i]);
        o->str[i] = value;
        o->val[i] = v;
        free(name);
    }
    return 0;
}

int copts_set(struct copts *o, const char *name, const char *value)
{
    int i = find(o, name);
    if (i < 0)
        return -1;
    uint64_t v = 0;
    char err[256];
    if (parse_value(o->desc[i], value, &v, err, sizeof(err)) < 0)
        return -1;
    free(o->str[i]);
    o->str[i] = xstrdup(value);
    o->val[i] = v;
    return 0;
}

void copts_set_number(struct copts *o, const char *name, uint64_t v)
{
    int i = find(o, name);
    if (i < 0)
        return;
    char buf[32];
    snprintf(buf, sizeof(buf), "%" PRIu64, v);
    free(o->str[i]);
    o->str[i] = xstrdup(buf);
    o->val[i] = v;
}

void copts_unset(struct copts *o, const char *name)
{
    int i = find(o, name);
    if (i >= 0) {
        free(o->str[i]);
        o->str[i] = NULL;
    }
}

bool copts_isset(const struct copts *o, const char *name)
{
    int i = find(o, name);
    return i >= 0 && o->str[i];
}

const char *copts_str(const struct copts *o, const char *name)
{
    int i = find(o, name);
    if (i < 0)
        return NULL;
    return o->str[i] ? o->str[i] : o->desc[i]->def;
}

uint64_t copts_num(const struct copts *o, const char *name, uint64_t def)
{
    int i = find(o, name);
    if (i < 0)
        return def;
    if (o->str[i])
        return o->val[i];
    uint64_t v;
    char err[256];
    if (o->desc[i]->def && parse_value(o->desc[i], o->desc[i]->def, &v, err, sizeof(err)) == 0)
        return v;
    return def;
}

bool copts_bool(const struct copts *o, const char *name, bool def)
{
    return copts_num(o, name, def) != 0;
}

void copts_print(const struct copts *o, FILE *f)
{
    const char *sep = "";
    for (size_t i = 0; i < o->n; i++) {
        const struct copt_desc *d = o->desc[i];
        const char *s = o->str[i] ? o->str[i] : d->def;
        if (!s)
            continue;
        fprintf(f, "%s%s=", sep, d->name);
        sep = " ";
        if (o->str[i] && (d->type == COPT_SIZE || d->type == COPT_NUM)) {
            /* qemu_opts_print: both as PRId64 */
            fprintf(f, "%" PRId64, (int64_t)o->val[i]);
        } else if (d->type == COPT_STR) {
            for (const char *c = s; *c; c++) { /* commas doubled, as qemu prints strings */
                if (*c == ',')
                    fputc(',', f);
                fputc(*c, f);
            }
        } else {
            fputs(s, f);
        }
    }
}

/* qapi BlockdevDriver values (7.2, as built by Debian) accepted for backing-fmt */
static const char *const backing_drivers[] = {
    "blkdebug", "blklogwrites", "blkreplay", "blkverify", "bochs", "cloop", "compress",
    "copy-before-write", "copy-on-read", "dmg", "file", "snapshot-access", "ftp", "ftps",
    "gluster", "host_cdrom", "host_device", "http", "https", "io_uring", "iscsi", "luks", "nbd",
    "nfs", "null-aio", "null-co", "nvme", "nvme-io_uring", "parallels", "preallocate", "qcow",
    "qcow2", "qed", "quorum", "raw", "rbd", "replication", "ssh", "throttle", "vdi", "vhdx",
    "virtio-blk-vfio-pci", "virtio-blk-vhost-user", "virtio-blk-vhost-vdpa", "vmdk", "vpc",
    "vvfat", NULL,
};

bool copts_backing_fmt_known(const char *fmt)
{
    for (const char *const *d = backing_drivers; *d; d++)
        if (!strcmp(fmt, *d))
            return true;
    return false;
}
