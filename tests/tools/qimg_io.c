/* qimg-io: a test driver with qemu-io's command-line form, running qemu-io's commands through
 * qimg's block layer, so that writes can be compared with the real qemu-io before any writing
 * command exists. Not installed and not a user command: `make` builds build/qimg-io.
 *
 *   qimg-io [-f FMT] [-r] [-U] [-c CMD]... [FILE]
 *
 * Commands (qemu-io 7.2's syntax, output, messages and exit status; size arguments through
 * util/size.c, qemu's qemu_strtosz): read [-Cpqv] [-P pat [-s off] [-l len]] off len,
 * write [-cCfpquz] [-P pat] off len, discard [-Cq] off len, flush, truncate [-m mode] off,
 * sleep ms. Every I/O command prints qemu-io's two report lines, timing included (iotests'
 * _filter_qemu_io turns them into the same text). qemu-io exits 1 when any command failed,
 * 0 otherwise, and so does this. Not supported (refused with a message naming qimg-io):
 * vmstate (-b), pattern files (-s), -n, registered buffers, the aio and other commands, the
 * interactive mode; every qemu-io option but -c -f -r -U -h. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ctype.h>

#include "block/image.h"
#include "io/lock.h"
#include "util/err.h"
#include "util/secrets.h"
#include "util/size.h"
#include "util/xalloc.h"

/* qemu's BDRV_REQUEST_MAX_BYTES: the largest request qemu-io accepts */
#define REQ_MAX_BYTES ((int64_t)(INT_MAX & ~511))

static image_t *blk;
static const char *blk_name;
static bool holds_resize; /* the resize permission, taken by the first truncate */

/* ---- qemu-io's number parsing and report formatting (qemu-io-cmds.c) ---- */

/* qemu-io's cvtnum(): a size in [0, INT64_MAX], or -EINVAL / -ERANGE */
static int64_t io_cvtnum(const char *s)
{
    uint64_t v;
    int r = parse_size_ex(s, &v);
    if (r < 0)
        return r;
    return v > INT64_MAX ? -ERANGE : (int64_t)v;
}

static void print_cvtnum_err(int64_t rc, const char *arg)
{
    if (rc == -EINVAL)
        printf("Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- %s\n",
               arg);
    else if (rc == -ERANGE)
        printf("Parsing error: argument too large -- %s\n", arg);
    else
        printf("Parsing error: %s\n", arg);
}

static int parse_pattern(const char *arg)
{
    char *end;
    long v = strtol(arg, &end, 0);
    if (v < 0 || v > 255 || *end) {
        printf("%s is not a valid pattern byte\n", arg);
        return -1;
    }
    return (int)v;
}

/* cvtstr(): "%.3f" in the largest binary unit that is at least 1, ".000" dropped */
static void cvtstr(double v, char *str, size_t size)
{
    static const char *const units[] = { " EiB", " PiB", " TiB", " GiB", " MiB", " KiB" };
    const char *suffix = " bytes";
    int i;
    for (i = 0; i < 6; i++) {
        double unit = (double)(1ULL << (10 * (6 - i)));
        if (v >= unit) {
            suffix = units[i];
            snprintf(str, size - 4, "%.3f", v / unit);
            break;
        }
    }
    if (i == 6)
        snprintf(str, size - 6, "%f", v);
    char *trim = strstr(str, ".000");
    if (trim)
        strcpy(trim, suffix);
    else
        strcat(str, suffix);
}

static double tdiv(double v, struct timespec t)
{
    return v / ((double)t.tv_sec + (double)t.tv_nsec / 1e9);
}

static void timestr(struct timespec t, char *ts, size_t size, bool verbose)
{
    double frac = (double)t.tv_nsec / 1e9;
    unsigned sec = (unsigned)t.tv_sec;
    if (verbose || sec)
        snprintf(ts, size, "%u:%02u:%05.2f", sec / 3600, sec % 3600 / 60, sec % 60 + frac);
    else
        snprintf(ts, size, "%05.2f sec", frac);
}

static struct timespec now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t;
}

static struct timespec tsub(struct timespec a, struct timespec b)
{
    a.tv_nsec -= b.tv_nsec;
    if (a.tv_nsec < 0) {
        a.tv_nsec += 1000000000L;
        a.tv_sec--;
    }
    a.tv_sec -= b.tv_sec;
    return a;
}

static void print_report(const char *op, struct timespec t, int64_t off, int64_t count,
                         int64_t total, int cnt, bool Cflag)
{
    char s1[64], s2[64], ts[64];
    timestr(t, ts, sizeof(ts), Cflag);
    if (Cflag) {
        printf("%" PRId64 ",%d,%s,%.3f,%.3f\n", total, cnt, ts, tdiv((double)total, t),
               tdiv(cnt, t));
        return;
    }
    cvtstr((double)total, s1, sizeof(s1));
    cvtstr(tdiv((double)total, t), s2, sizeof(s2));
    printf("%s %" PRId64 "/%" PRId64 " bytes at offset %" PRId64 "\n", op, total, count, off);
    printf("%s, %d ops; %s (%s/sec and %.4f ops/sec)\n", s1, cnt, ts, s2, tdiv(cnt, t));
}

static void dump_buffer(const uint8_t *p, int64_t off, int64_t len)
{
    for (int64_t i = 0; i < len; i += 16) {
        int64_t n = len - i < 16 ? len - i : 16;
        printf("%08" PRIx64 ":  ", (uint64_t)(off + i));
        for (int64_t j = 0; j < n; j++)
            printf("%02x ", p[i + j]);
        printf(" ");
        for (int64_t j = 0; j < n; j++)
            putchar(isalnum(p[i + j]) ? p[i + j] : '.');
        printf("\n");
    }
}

/* ---- commands ---- */

typedef struct cmd {
    const char *name, *altname;
    int (*fn)(const struct cmd *ct, int argc, char **argv);
    int argmin, argmax; /* argmax -1: no limit */
    bool write, resize; /* permissions the command needs (qemu's ct->perm) */
    const char *args, *oneline;
} cmd_t;

static int usage(const cmd_t *ct)
{
    printf("%s %s -- %s\n", ct->name, ct->args, ct->oneline);
    return -EINVAL;
}

static int unsupported(const char *what)
{
    fprintf(stderr, "%s: %s is not supported by qimg-io\n", qimg_progname, what);
    return -ENOTSUP;
}

/* offset and length arguments, as every I/O command parses them */
static int off_len(char **argv, int64_t *off, int64_t *len)
{
    *off = io_cvtnum(argv[0]);
    if (*off < 0) {
        print_cvtnum_err(*off, argv[0]);
        return (int)*off;
    }
    *len = io_cvtnum(argv[1]);
    if (*len < 0) {
        print_cvtnum_err(*len, argv[1]);
        return (int)*len;
    }
    return 0;
}

static int read_f(const cmd_t *ct, int argc, char **argv)
{
    bool Cflag = false, qflag = false, vflag = false, Pflag = false, sflag = false,
         lflag = false;
    int c, pattern = 0;
    int64_t off, count, poff = 0, pcount = 0;
    while ((c = getopt(argc, argv, "bCl:pP:qs:v")) != -1) {
        switch (c) {
        case 'b': return unsupported("read -b (vmstate)");
        case 'C': Cflag = true; break;
        case 'l':
            lflag = true;
            if ((pcount = io_cvtnum(optarg)) < 0) {
                print_cvtnum_err(pcount, optarg);
                return (int)pcount;
            }
            break;
        case 'p': break; /* ignored, as in qemu-io */
        case 'P':
            Pflag = true;
            if ((pattern = parse_pattern(optarg)) < 0)
                return -EINVAL;
            break;
        case 'q': qflag = true; break;
        case 's':
            sflag = true;
            if ((poff = io_cvtnum(optarg)) < 0) {
                print_cvtnum_err(poff, optarg);
                return (int)poff;
            }
            break;
        case 'v': vflag = true; break;
        default: return usage(ct);
        }
    }
    if (optind != argc - 2)
        return usage(ct);
    int r = off_len(argv + optind, &off, &count);
    if (r < 0)
        return r;
    if (count > REQ_MAX_BYTES) {
        printf("length cannot exceed %" PRId64 ", given %s\n", REQ_MAX_BYTES, argv[optind + 1]);
        return -EINVAL;
    }
    if (!Pflag && (lflag || sflag))
        return usage(ct);
    if (!lflag)
        pcount = count - poff;
    if (pcount < 0 || pcount + poff > count) {
        printf("pattern verification range exceeds end of read data\n");
        return -EINVAL;
    }
    uint8_t *buf = xmalloc(count ? (size_t)count : 1);
    memset(buf, 0xab, (size_t)count);
    struct timespec t1 = now();
    r = image_check_request(blk, (uint64_t)off, (uint64_t)count); /* blk_pread: no zeros */
    if (r == 0)
        r = image_read(blk, (uint64_t)off, buf, (size_t)count);
    struct timespec t2 = now();
    if (r < 0) {
        printf("read failed: %s\n", strerror(-r));
        goto out;
    }
    if (Pflag) {
        for (int64_t i = 0; i < pcount; i++) {
            if (buf[poff + i] != pattern) {
                printf("Pattern verification failed at offset %" PRId64 ", %" PRId64
                       " bytes\n", off + poff, pcount);
                r = -EINVAL;
                break;
            }
        }
    }
    if (qflag)
        goto out;
    if (vflag)
        dump_buffer(buf, off, count);
    print_report("read", tsub(t2, t1), off, count, count, 1, Cflag);
out:
    free(buf);
    return r;
}

static int write_f(const cmd_t *ct, int argc, char **argv)
{
    bool Cflag = false, qflag = false, Pflag = false, zflag = false, cflag = false,
         fua = false, unmap = false;
    int c, pattern = 0xcd;
    int64_t off, count;
    while ((c = getopt(argc, argv, "bcCfnpP:qs:uz")) != -1) {
        switch (c) {
        case 'b': return unsupported("write -b (vmstate)");
        case 'c': cflag = true; break;
        case 'C': Cflag = true; break;
        case 'f': fua = true; break;
        case 'n': return unsupported("write -n");
        case 'p': break; /* ignored, as in qemu-io */
        case 'P':
            Pflag = true;
            if ((pattern = parse_pattern(optarg)) < 0)
                return -EINVAL;
            break;
        case 'q': qflag = true; break;
        case 's': return unsupported("write -s (pattern file)");
        case 'u': unmap = true; break;
        case 'z': zflag = true; break;
        default: return usage(ct);
        }
    }
    if (optind != argc - 2)
        return usage(ct);
    if (fua && cflag) {
        printf("-f and -b or -c cannot be specified at the same time\n");
        return -EINVAL;
    }
    if (unmap && !zflag) {
        printf("-u requires -z to be specified\n");
        return -EINVAL;
    }
    if (zflag && Pflag) {
        printf("Only one of -z, -P, and -s can be specified at the same time\n");
        return -EINVAL;
    }
    int r = off_len(argv + optind, &off, &count);
    if (r < 0)
        return r;
    if (count > REQ_MAX_BYTES) {
        printf("length cannot exceed %" PRId64 " without -n, given %s\n", REQ_MAX_BYTES,
               argv[optind + 1]);
        return -EINVAL;
    }
    if (cflag && off % 512) {
        printf("%" PRId64 " is not a sector-aligned value for 'offset'\n", off);
        return -EINVAL;
    }
    if (cflag && count % 512) {
        printf("%" PRId64 " is not a sector-aligned value for 'count'\n", count);
        return -EINVAL;
    }
    uint8_t *buf = NULL;
    if (!zflag) {
        buf = xmalloc(count ? (size_t)count : 1);
        memset(buf, pattern, (size_t)count);
    }
    struct timespec t1 = now();
    if (zflag)
        r = image_write_zeroes(blk, (uint64_t)off, (uint64_t)count, unmap);
    else if (cflag)
        r = image_write_compressed(blk, (uint64_t)off, buf, (size_t)count);
    else
        r = image_write(blk, (uint64_t)off, buf, (size_t)count);
    /* No native FUA: qemu flushes after the write. qemu-io's default cache mode is
     * writethrough (no -t: the BlockBackend's write cache is off), which makes every write,
     * zero write and compressed write FUA; the flush's fdatasync shows: ext4 then answers
     * SEEK_HOLE differently over a range later zeroed with FALLOC_FL_ZERO_RANGE. */
    if (r == 0)
        r = image_flush(blk);
    struct timespec t2 = now();
    free(buf);
    if (r < 0) {
        printf("write failed: %s\n", strerror(-r));
        return r;
    }
    if (!qflag)
        print_report("wrote", tsub(t2, t1), off, count, count, 1, Cflag);
    return 0;
}

static int discard_f(const cmd_t *ct, int argc, char **argv)
{
    bool Cflag = false, qflag = false;
    int c;
    int64_t off, count;
    while ((c = getopt(argc, argv, "Cq")) != -1) {
        switch (c) {
        case 'C': Cflag = true; break;
        case 'q': qflag = true; break;
        default: return usage(ct);
        }
    }
    if (optind != argc - 2)
        return usage(ct);
    int r = off_len(argv + optind, &off, &count);
    if (r < 0)
        return r;
    if (count > REQ_MAX_BYTES) {
        printf("length cannot exceed %" PRId64 ", given %s\n", REQ_MAX_BYTES, argv[optind + 1]);
        return -EINVAL;
    }
    struct timespec t1 = now();
    r = image_discard(blk, (uint64_t)off, (uint64_t)count);
    struct timespec t2 = now();
    if (r < 0) {
        printf("discard failed: %s\n", strerror(-r));
        return r;
    }
    if (!qflag)
        print_report("discard", tsub(t2, t1), off, count, count, 1, Cflag);
    return 0;
}

static int flush_f(const cmd_t *ct, int argc, char **argv)
{
    (void)ct, (void)argc, (void)argv;
    return image_flush(blk);
}

static int truncate_f(const cmd_t *ct, int argc, char **argv)
{
    static const char *const modes[] = { "off", "metadata", "falloc", "full" };
    enum img_prealloc prealloc = IMG_PREALLOC_OFF;
    int c;
    while ((c = getopt(argc, argv, "m:")) != -1) {
        switch (c) {
        case 'm': {
            size_t i = 0;
            while (i < 4 && strcmp(optarg, modes[i]))
                i++;
            if (i == 4) {
                err_report("Invalid preallocation mode '%s'", optarg);
                return -EINVAL;
            }
            prealloc = (enum img_prealloc)i;
            break;
        }
        default: return usage(ct);
        }
    }
    /* qemu-io reads the operand at optind but names argv[1] in a parse error */
    int64_t off = io_cvtnum(argv[optind]);
    if (off < 0) {
        print_cvtnum_err(off, argv[1]);
        return (int)off;
    }
    char *msg = NULL;
    int r = image_truncate(blk, (uint64_t)off, prealloc, &msg);
    if (r < 0) {
        err_report("%s", msg);
        free(msg);
    }
    return r;
}

static int sleep_f(const cmd_t *ct, int argc, char **argv)
{
    (void)ct, (void)argc;
    char *end;
    long ms = strtol(argv[1], &end, 0);
    if (ms < 0 || *end) {
        printf("%s is not a valid number\n", argv[1]);
        return -EINVAL;
    }
    struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&t, &t) < 0 && errno == EINTR)
        ;
    return 0;
}

static const cmd_t cmds[] = {
    { "read", "r", read_f, 2, -1, false, false, "[-abCqv] [-P pattern [-s off] [-l len]] off len",
      "reads a number of bytes at a specified offset" },
    { "write", "w", write_f, 2, -1, true, false,
      "[-bcCfnquz] [-P pattern | -s source_file] off len",
      "writes a number of bytes at a specified offset" },
    { "discard", "d", discard_f, 2, -1, true, false, "[-Cq] off len",
      "discards a number of bytes at a specified offset" },
    { "flush", "f", flush_f, 0, 0, false, false, "", "flush all in-core file state to disk" },
    { "truncate", "t", truncate_f, 1, 3, true, true, "[-m prealloc_mode] off",
      "truncates the current file at the given offset" },
    { "sleep", NULL, sleep_f, 1, 1, false, false, "milliseconds",
      "waits for the given value in milliseconds" },
};

/* qemu-io's blk_set_perm() for a command that needs more than the open gave: a read-only
 * image cannot get write; resize is locked on first use (qemu keeps it afterwards). */
static int take_perms(const cmd_t *ct)
{
    if (!ct->write)
        return 0;
    if (!(blk->flags & IMG_OPEN_RDWR)) {
        err_report("Block node is read-only");
        return -EPERM;
    }
    if (ct->resize && !holds_resize && !strcmp(blk->format, "raw")) {
        const char *name;
        bool shared;
        int r = qio_lock_perms(blk->file, QIO_PERM_READ | QIO_PERM_WRITE | QIO_PERM_RESIZE, 0,
                               &name, &shared);
        if (r == -EBUSY) {
            char *m = qio_lock_msg(name, shared, blk_name);
            err_report("%s", m);
            free(m);
            return r;
        }
        if (r < 0)
            return r;
        holds_resize = true;
    }
    return 0;
}

/* qemu-io's qemuio_command(): split at spaces, find, check, run. <0 when the command failed. */
static int run_command(char *line)
{
    char *argv[64];
    int argc = 0;
    for (char *tok = strtok(line, " "); tok; tok = strtok(NULL, " ")) {
        if (argc == 63) {
            fprintf(stderr, "%s: too many arguments for qimg-io\n", qimg_progname);
            return -E2BIG;
        }
        argv[argc++] = tok;
    }
    argv[argc] = NULL;
    if (argc == 0)
        return 0;
    const cmd_t *ct = NULL;
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (!strcmp(cmds[i].name, argv[0]) || (cmds[i].altname && !strcmp(cmds[i].altname,
                                                                            argv[0])))
            ct = &cmds[i];
    if (!ct) {
        fprintf(stderr, "command \"%s\" not found\n", argv[0]);
        return -EINVAL;
    }
    if (!blk && strcmp(ct->name, "sleep")) {
        fprintf(stderr, "no file open, try 'help open'\n");
        return -EINVAL;
    }
    int n = argc - 1;
    if (n < ct->argmin || (ct->argmax != -1 && n > ct->argmax)) {
        if (ct->argmax == -1)
            fprintf(stderr, "bad argument count %d to %s, expected at least %d arguments\n", n,
                    argv[0], ct->argmin);
        else if (ct->argmin == ct->argmax)
            fprintf(stderr, "bad argument count %d to %s, expected %d arguments\n", n, argv[0],
                    ct->argmin);
        else
            fprintf(stderr, "bad argument count %d to %s, expected between %d and %d "
                    "arguments\n", n, argv[0], ct->argmin, ct->argmax);
        return -EINVAL;
    }
    if (blk) {
        int r = take_perms(ct);
        if (r < 0)
            return r;
    }
    optind = 0;
    int r = ct->fn(ct, argc, argv);
    fflush(stdout);
    return r;
}

static void print_usage(void)
{
    printf("Usage: %s [OPTIONS]... [-c STRING]... [file]\n"
           "QEMU Disk exerciser (qimg-io: qimg's block layer behind qemu-io's commands)\n"
           "\n"
           "  -c, --cmd STRING     execute command with its arguments\n"
           "                       from the given string\n"
           "  -f, --format FMT     specifies the block driver to use\n"
           "  -r, --read-only      export read-only\n"
           "  -U, --force-share    force shared permissions\n"
           "  -h, --help           display this help and exit\n",
           qimg_progname);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "cmd", required_argument, NULL, 'c' },
        { "format", required_argument, NULL, 'f' },
        { "read-only", no_argument, NULL, 'r' },
        { "force-share", no_argument, NULL, 'U' },
        { "help", no_argument, NULL, 'h' },
        { "object", required_argument, NULL, 'O' },
        { NULL, 0, NULL, 0 },
    };
    err_set_progname(argv[0]);
    const char *fmt = NULL;
    bool rdonly = false, share = false;
    /* every exit frees what main allocated: the ASan build checks for leaks */
    int ret = 1;
    char **lines = xcalloc((size_t)argc, sizeof(*lines));
    int nlines = 0, c;
    while ((c = getopt_long(argc, argv, "+c:f:rUh", longopts, NULL)) != -1) {
        switch (c) {
        case 'c': lines[nlines++] = optarg; break;
        case 'f': fmt = optarg; break;
        case 'r': rdonly = true; break;
        case 'U': share = true; break;
        case 'O':
            if (secrets_add_object(optarg) < 0)
                goto out;
            break;
        case 'h': print_usage(); ret = 0; goto out;
        default: print_usage(); goto out;
        }
    }
    if (argc - optind > 1) {
        print_usage();
        goto out;
    }
    if (nlines == 0) {
        fprintf(stderr, "%s: the interactive mode is not supported by qimg-io; use -c\n",
                qimg_progname);
        goto out;
    }
    if (optind < argc) {
        blk_name = argv[optind];
        if (share && !rdonly) {
            err_report("can't open device %s: force-share=on can only be used with read-only "
                       "images", blk_name);
            goto out;
        }
        int flags = (rdonly ? 0 : IMG_OPEN_RDWR) | (share ? IMG_OPEN_SHARE : 0);
        char *msg = NULL;
        if (image_open(blk_name, fmt, flags, &blk, &msg) < 0) {
            /* qemu-img's message is "Could not open 'F': " + the block layer's; qemu-io
             * prints the block layer's alone */
            char *prefix = xasprintf("Could not open '%s': ", blk_name);
            const char *inner = strncmp(msg, prefix, strlen(prefix)) ? msg
                                                                     : msg + strlen(prefix);
            err_report("can't open device %s: %s", blk_name, inner);
            free(prefix);
            free(msg);
            goto out;
        }
    }
    ret = 0;
    for (int i = 0; i < nlines; i++) {
        char *line = xstrdup(lines[i]);
        if (run_command(line) < 0)
            ret = 1;
        free(line);
    }
    if (blk) {
        image_flush(blk); /* qemu's bdrv_close() flushes */
        image_close(blk);
    }
out:
    free(lines);
    return ret;
}
