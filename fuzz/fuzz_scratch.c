/* Scratch directory for the targets that open images (check, read). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz/fuzz_common.h"

static const char *const names[] = { "base.qcow2", "df.raw", "backing.qcow2", "base.raw" };
static char dir[64];

static void cleanup(void)
{
    if (!dir[0] || chdir("/") != 0)
        return;
    char p[128];
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
        unlink(p);
    }
    rmdir(dir);
}

void fuzz_enter_scratch_dir(void)
{
    strcpy(dir, "/tmp/qimg-fuzz-XXXXXX");
    if (!mkdtemp(dir) || chdir(dir) != 0) {
        perror("fuzz scratch dir");
        abort();
    }
    atexit(cleanup);
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        FILE *f = fopen(names[i], "wb");
        if (f) {
            /* 64 KiB of (sparse) zeros: a data file that covers a few clusters */
            if (ftruncate(fileno(f), 65536) != 0)
                perror(names[i]);
            fclose(f);
        }
    }
}
