/* ssh names and options for the name parser (blockspec.c): qemu 7.2's block/ssh.c
 * ssh_parse_filename / parse_uri, ssh_runtime_opts, ssh_process_legacy_options and the
 * BlockdevOptionsSsh checks, turned into the address the ssh backend (io/ssh.c) opens. */
#ifndef QIMG_BLOCK_BLOCKSPEC_SSH_H
#define QIMG_BLOCK_BLOCKSPEC_SSH_H

#include <stdbool.h>

#include "block/blockspec.h"
#include "io/ssh.h"

/* "ssh:..." (the ssh driver's protocol name). */
bool blockspec_is_ssh_name(const char *name);
/* The options of "ssh://[USER@]HOST[:PORT]/PATH[?host_key_check=X]" (user, server.host,
 * server.port, path, host_key_check; unprefixed) into o; -EINVAL with qemu's message
 * ("missing hostname in URI", ...). A URI qemu's parser rejects adds nothing and no error,
 * as in qemu (the options check then says what is missing). */
int blockspec_ssh_parse_name(const char *name, struct bspec *o, char **errmsg);
/* Whether o (unprefixed) has an option that may not come with an ssh file name (qemu:
 * "user, host, port, path, host_key_check cannot be used at the same time as a file
 * option"). */
bool blockspec_ssh_name_conflict(const struct bspec *o);
/* Takes the ssh driver's options out of o (unprefixed) into a; what is left is not the ssh
 * driver's. -EINVAL with qemu's message ("Parameter 'server' is missing", ...). */
int blockspec_ssh_take(struct bspec *o, struct qio_ssh_addr *a, char **errmsg);

#endif
