/* The read loop shared by image_read() and the drivers' reads (driver.h). */
#include <string.h>

#include "block/driver.h"

int read_in_steps(image_t *img, uint64_t off, void *buf, size_t n, read_step_fn step)
{
    uint8_t *p = buf;
    while (n) {
        int64_t k = step(img, off, p, n);
        if (k < 0)
            return (int)k;
        p += k;
        off += (uint64_t)k;
        n -= (size_t)k;
    }
    return 0;
}

int read_from_backing(image_t *img, uint64_t off, void *buf, size_t n)
{
    if (!img->backing) {
        memset(buf, 0, n);
        return 0;
    }
    return image_read(img->backing, off, buf, n);
}
