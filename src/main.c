/* qimg entry point: picks the command and hands it argv (argv[0] is the command name). */
#include <stdio.h>
#include <string.h>

#include "cmd/commands.h"
#include "util/err.h"

struct command {
    const char *name;
    cmd_fn fn;
};

static const struct command commands[] = {
#define X(n) { #n, cmd_##n },
    QIMG_COMMANDS(X)
#undef X
};

static void help(void)
{
    printf("%s version " QIMG_VERSION " - a correctness-first reimplementation of qemu-img\n"
           "usage: %s [standard options] command [command options]\n\n"
           "Command syntax: see 'man qimg' and README.md. Commands:\n",
           qimg_progname, qimg_progname);
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        printf("  %-10s%s\n", commands[i].name, commands[i].fn ? "" : " (not implemented yet)");
    printf("\nImage names: a file name, 'file:NAME' (a name with a colon), 'json:{...}' (block\n"
           "options as JSON), or with --image-opts a 'key=value,...' list (',,' is a comma),\n"
           "e.g. 'driver=qcow2,file.filename=disk.qcow2'. NBD exports: 'nbd://HOST[:PORT]/EXPORT',\n"
           "'nbd+unix:///EXPORT?socket=PATH', 'nbd:unix:PATH[:exportname=NAME]',\n"
           "'nbd:HOST:PORT[:exportname=NAME]' or --image-opts 'driver=nbd,server.type=unix,...'.\n"
           "Files over ssh: 'ssh://[USER@]HOST[:PORT]/PATH[?host_key_check=no|yes|sha256:HEX]'\n"
           "or --image-opts 'driver=ssh,server.host=H,server.port=P,path=PATH'.\n");
    printf("\nEncrypted images (LUKS, qcow2 LUKS/AES): --object secret,id=ID,data=PASS|file=PATH\n"
           "and the image option encrypt.key-secret=ID (qcow2) or key-secret=ID (luks) through\n"
           "--image-opts or a json: name; create takes them with -o.\n");
}

int main(int argc, char **argv)
{
    err_set_progname(argv[0]);
    if (argc < 2)
        err_usage("Not enough arguments");
    const char *name = argv[1];
    if (!strcmp(name, "-h") || !strcmp(name, "--help")) {
        help();
        return 0;
    }
    if (!strcmp(name, "-V") || !strcmp(name, "--version")) {
        printf("%s version " QIMG_VERSION "\n", qimg_progname);
        return 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(commands[i].name, name) != 0)
            continue;
        if (!commands[i].fn) {
            err_report("Command not implemented yet: %s", name);
            return 1;
        }
        return commands[i].fn(argc - 1, argv + 1);
    }
    err_usage("Command not found: %s", name);
}
