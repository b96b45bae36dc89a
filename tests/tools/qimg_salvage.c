/* qimg-salvage: the salvage reader (src/block/salvage.h) on its own, for the tests:
 *   qimg-salvage [-U] IMAGE OUT
 * writes the salvaged guest bytes of IMAGE to the raw file OUT (ranges block status calls
 * zero are left as holes and not read, the rest read), prints the lost and suspect ranges
 * on stderr and exits with salvage_report's code (0, 2, 3), or 1 on an error. Not
 * installed; `qimg convert --salvage` is the user's way to it. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/image.h"
#include "block/salvage.h"
#include "util/err.h"

int main(int argc, char **argv)
{
    err_set_progname(argv[0]);
    int flags = 0, i = 1;
    if (i < argc && !strcmp(argv[i], "-U")) {
        flags |= IMG_OPEN_SHARE;
        i++;
    }
    if (argc - i != 2) {
        fprintf(stderr, "usage: %s [-U] IMAGE OUT\n", argv[0]);
        return 1;
    }
    image_t *img;
    char *msg = NULL;
    if (salvage_open(argv[i], flags, &img, &msg) < 0) {
        err_report("%s", msg);
        free(msg);
        return 1;
    }
    int fd = open(argv[i + 1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || ftruncate(fd, (off_t)img->size) < 0) {
        err_report("%s: %s", argv[i + 1], strerror(errno));
        image_close(img);
        return 1;
    }
    enum { CHUNK = 1 << 20 };
    char *buf = malloc(CHUNK);
    int ret = buf ? 0 : 1;
    for (uint64_t off = 0; ret == 0 && off < img->size;) {
        block_status_t st;
        int r = image_block_status(img, off, CHUNK, &st);
        if (r < 0) {
            err_report("block status at %llu: %s", (unsigned long long)off, strerror(-r));
            ret = 1;
            break;
        }
        if (!(st.flags & BS_ZERO)) {
            if ((r = image_read(img, off, buf, st.pnum)) < 0 ||
                pwrite(fd, buf, st.pnum, (off_t)off) != (ssize_t)st.pnum) {
                err_report("copy at %llu failed", (unsigned long long)off);
                ret = 1;
                break;
            }
        }
        off += st.pnum;
    }
    free(buf);
    if (close(fd) < 0)
        ret = 1;
    if (ret == 0)
        ret = salvage_report(img, stderr);
    image_close(img);
    return ret;
}
