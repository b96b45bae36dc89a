#include "util/progress.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

static struct {
    bool enabled;
    float current, last_print, min_skip;
} st;

static volatile sig_atomic_t print_pending;

static void on_sigusr1(int sig)
{
    (void)sig;
    print_pending = 1;
}

void progress_init(bool enabled, float min_skip)
{
    memset(&st, 0, sizeof(st));
    st.enabled = enabled;
    st.min_skip = min_skip;
    if (!enabled) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_sigusr1;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGUSR1, &sa, NULL);
    }
}

static void do_print(void)
{
    if (st.enabled) {
        printf("    (%3.2f/100%%)\r", st.current);
        fflush(stdout);
    } else if (print_pending) {
        fprintf(stderr, "    (%3.2f/100%%)\n", st.current);
        print_pending = 0;
    }
}

void progress_print(float delta, int max)
{
    float current = max == 0 ? delta : st.current + delta / 100 * max;
    if (current > 100)
        current = 100;
    st.current = current;
    if (current > st.last_print + st.min_skip || current < st.last_print - st.min_skip ||
        current == 0 || current == 100) {
        st.last_print = st.current;
        do_print();
    }
}

void progress_end(void)
{
    if (st.enabled)
        printf("\n");
}
