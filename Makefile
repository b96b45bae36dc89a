# qimg build. `make` builds build/qimg and `make demo` shows it at work; both first make sure
# the build packages are there (scripts/ensure-deps.sh build: installs them as root, else
# prints the apt-get line and stops). `make test` does the same for the test packages, builds
# and runs every test; `make asan` runs the whole suite on an ASan+UBSan build.
PREFIX  ?= /usr/local
DESTDIR ?=
BUILD   ?= build
CC      ?= gcc
OPT     ?= -O2
SANFLAGS ?=
CFLAGS  ?=
CFLAGS  += -std=c11 $(OPT) -g -Wall -Wextra -Werror -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 \
           -pthread -Isrc -I. $(SANFLAGS)
LDFLAGS += -pthread $(SANFLAGS)
LIBS    := -lz -lzstd -lsqlite3 -lm
# jansson parses json: image names (src/block/blockspec_json.c says why jansson)
LIBS    += -ljansson
# libnbd is the NBD client (src/io/nbd.c says why libnbd), loaded with dlopen when an NBD
# name is opened (src/io/nbd.c says why); libnbd-dev gives its header
# libssh (libssh-dev: its header) is the ssh client, loaded the same way (src/io/ssh.c)
LIBS    += -ldl
# nettle is the crypto library (LUKS, AES, PBKDF2, the journal's SHA-256; README says why)
LIBS    += -lnettle
# liburing (Debian liburing-dev, in the build group) gives bench its io_uring engine; a build
# without it still works (bench -n then uses threads, -i io_uring is unknown as in a qemu
# built without io_uring).
HAVE_LIBURING ?= $(shell test -f /usr/include/liburing.h && echo 1)
ifeq ($(HAVE_LIBURING),1)
CFLAGS  += -DQIMG_HAVE_LIBURING
LIBS    += -luring
endif
# Debian's interpreter carries python3-pytest; a pyenv python3 earlier on PATH would not.
PYTHON  ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)

LIB_SRC  := $(sort $(filter-out src/main.c,$(wildcard src/*.c src/*/*.c checker/*.c repair/*.c)))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all deps test unit pytest asan demo install clean bench fuzz fuzz-smoke golden diffcheck \
        iotests iotests-must

all: $(BUILD)/qimg $(BUILD)/qimg-io $(BUILD)/qimg-salvage

# Package checks, once per build directory: the stamp is an order-only prerequisite, so a
# later `make` (or a sub-make of asan, fuzz, golden with the same BUILD) does not ask again.
$(BUILD)/.deps-%:
	@scripts/ensure-deps.sh $*
	@mkdir -p $(@D) && touch $@
# kept: as a pattern-rule target make would otherwise delete it as intermediate
.PRECIOUS: $(BUILD)/.deps-%

$(BUILD)/obj/%.o: %.c | $(BUILD)/.deps-build
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libqimg.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

# --whole-archive: main.c names commands through weak symbols, which alone would not pull
# their objects out of the archive.
$(BUILD)/qimg: $(BUILD)/obj/src/main.o $(BUILD)/libqimg.a
	$(CC) $(LDFLAGS) -o $@ $(BUILD)/obj/src/main.o -Wl,--whole-archive $(BUILD)/libqimg.a \
	  -Wl,--no-whole-archive $(LIBS)

# qemu-io's command line over qimg's block layer, for the write tests; not installed
$(BUILD)/qimg-io: tests/tools/qimg_io.c $(BUILD)/libqimg.a | $(BUILD)/.deps-build
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libqimg.a $(LDFLAGS) $(LIBS)

# the salvage reader on its own (tests/py/test_salvage.py); not installed
$(BUILD)/qimg-salvage: tests/tools/qimg_salvage.c $(BUILD)/libqimg.a | $(BUILD)/.deps-build
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libqimg.a $(LDFLAGS) $(LIBS)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libqimg.a | $(BUILD)/.deps-test
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libqimg.a $(LDFLAGS) $(LIBS) -lcmocka

deps:
	@scripts/ensure-deps.sh test

unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

pytest: $(BUILD)/qimg | $(BUILD)/.deps-test
	QIMG=$(CURDIR)/$(BUILD)/qimg PYTHON=$(PYTHON) scripts/pytest-shards.sh tests/py

test: deps
	$(MAKE) all
	$(MAKE) unit
	$(MAKE) pytest
	$(MAKE) replay
	$(MAKE) golden

asan: deps
	$(MAKE) BUILD=build-asan OPT=-O1 \
	  SANFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
	  all unit pytest

bench: $(BUILD)/qimg
	QIMG=$(CURDIR)/$(BUILD)/qimg python3 bench/run.py

# Differential fuzzing against the real qemu-img (random metadata damage; not part of
# `make test`): DIFFCHECK_SECS per run, DIFFCHECK_ARGS e.g. --repair, --seed N, --only A,B.
DIFFCHECK_SECS ?= 300
diffcheck: $(BUILD)/qimg
	QIMG=$(CURDIR)/$(BUILD)/qimg $(PYTHON) scripts/diffcheck.py --seconds $(DIFFCHECK_SECS) $(DIFFCHECK_ARGS)

# QEMU 7.2's own iotests with build/qimg as qemu-img (tests/iotests/README.md; the tests are
# fetched once from Debian's qemu source package into build/iotests): `make iotests` runs the
# 170 runs real qemu-img passes here and writes reports/iotests.md; `make iotests-must` runs
# tests/iotests/must-pass.txt, which CI gates on.
iotests: $(BUILD)/qimg | $(BUILD)/.deps-iotests
	BUILD=$(BUILD) tests/iotests/iotests.sh all $(IOTESTS_ARGS)

iotests-must: $(BUILD)/qimg | $(BUILD)/.deps-iotests
	BUILD=$(BUILD) tests/iotests/iotests.sh must

# check, dry run, repair with journal, undo and cmp on a copy of golden/demo/damaged.qcow2
demo: $(BUILD)/qimg
	@QIMG=$(CURDIR)/$(BUILD)/qimg golden/demo/demo.sh

install: $(BUILD)/qimg
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 0755 $(BUILD)/qimg $(DESTDIR)$(PREFIX)/bin/qimg
	install -m 0644 man/qimg.1 $(DESTDIR)$(PREFIX)/share/man/man1/qimg.1

clean:
	rm -rf build build-asan build-fuzz

-include $(LIB_OBJ:.o=.d) $(BUILD)/obj/src/main.d
include fuzz/fuzz.mk
