/* One file per command in src/cmd/. A command is listed here and in main.c's table; its
 * symbol is weak so the table can name commands whose file has not landed yet. */
#ifndef QIMG_CMD_COMMANDS_H
#define QIMG_CMD_COMMANDS_H

#define QIMG_VERSION "0.1.0"

typedef int (*cmd_fn)(int argc, char **argv);

#define QIMG_COMMANDS(X) \
    X(amend) X(bench) X(bitmap) X(check) X(commit) X(compare) X(convert) X(create) X(dd) \
    X(info) X(map) X(measure) X(snapshot) X(rebase) X(resize) X(undo)

#define X(name) int cmd_##name(int argc, char **argv) __attribute__((weak));
QIMG_COMMANDS(X)
#undef X

#endif
