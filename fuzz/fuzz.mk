# Fuzzing, golden suite, regression replay and valgrind targets (included by the Makefile).
#
#   make fuzz-smoke   every libFuzzer target for a fixed number of inputs (FUZZ_SMOKE_RUNS,
#                     seed FUZZ_SMOKE_SEED, at most FUZZ_SMOKE_SECS each) and both AFL++
#                     targets for FUZZ_SMOKE_AFL_SECS, two at a time (CI; under 10 min)
#   make fuzz         long runs: FUZZ_SECS per target (default 1800), two at a time
#   make fuzz-cov     coverage build (llvm-cov) replayed over seeds + saved corpora
#   make golden       the golden regression suite (part of `make test`)
#   make replay       every fuzz target (plain build, no sanitizer) over corpus/seeds and
#                     corpus/regressions, then qimg check/info/map on each regression file
#   make valgrind     the golden suite under valgrind memcheck (VALGRIND_STEPS=1,3: those
#                     steps of each case only, as CI runs it)
FUZZ_BUILD      ?= build-fuzz
FUZZ_CC         ?= clang
FUZZ_TARGETS    := header l2 refcount snapshot bitmap check read repair names
FUZZ_SMOKE_SECS ?= 60
FUZZ_SMOKE_SEED ?= 1
# inputs per target for fuzz-smoke: about 30 s each on this project's 2-core machine
FUZZ_SMOKE_RUNS ?= header=3000000 l2=60000 refcount=100000 snapshot=700000 bitmap=1400000 \
                   check=8000 read=30000 repair=1500 names=300000
FUZZ_SMOKE_AFL_SECS ?= 35
FUZZ_SECS       ?= 1800
FUZZ_JOBS       ?= 2
FUZZ_SAN        := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS     := -std=c11 -O1 -g -Wall -Wextra -Werror -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -Isrc -I.
FUZZ_COMMON     := fuzz/fuzz_scratch.c
# a smaller L2 batch buffer for the checker under ASan (see fuzz/fuzz_l2batch.c)
FUZZ_WRAP       := fuzz/fuzz_l2batch.c -Wl,--wrap=l2_reader_init
FUZZ_BINS       := $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)
REPLAY_BINS     := $(FUZZ_TARGETS:%=$(BUILD)/fuzz-replay/fuzz_%)
COV_BINS        := $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/cov/fuzz_%)

.PHONY: fuzz fuzz-smoke fuzz-build fuzz-deps fuzz-afl-build fuzz-cov replay golden golden-regen valgrind

fuzz-deps:
	@scripts/ensure-deps.sh fuzz

# The instrumented library builds are sub-makes of this Makefile with another BUILD; they
# must not see the rules below that start them.
ifndef QIMG_FUZZ_SUBMAKE
# Library objects instrumented for libFuzzer (the sanitizers' runtime comes at link time).
$(FUZZ_BUILD)/lib/libqimg.a: FORCE_FUZZLIB
	@$(MAKE) --no-print-directory QIMG_FUZZ_SUBMAKE=1 BUILD=$(FUZZ_BUILD)/lib CC=$(FUZZ_CC) OPT=-O1 \
	  SANFLAGS="-fsanitize=fuzzer-no-link $(FUZZ_SAN)" $@

$(FUZZ_BUILD)/fuzz_%: fuzz/fuzz_%.c $(FUZZ_COMMON) fuzz/fuzz_common.h $(FUZZ_BUILD)/lib/libqimg.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $(FUZZ_SAN) -o $@ $< $(FUZZ_COMMON) \
	  $(FUZZ_WRAP) $(FUZZ_BUILD)/lib/libqimg.a $(LIBS)

# AFL++: the command-line check and map paths on a file, with ASan.
$(FUZZ_BUILD)/afl/qimg: FORCE_FUZZLIB
	@AFL_USE_ASAN=1 AFL_QUIET=1 $(MAKE) --no-print-directory QIMG_FUZZ_SUBMAKE=1 BUILD=$(FUZZ_BUILD)/afl \
	  CC=afl-clang-fast OPT=-O1 $@

fuzz-build: fuzz-deps
	$(MAKE) $(FUZZ_BINS) $(FUZZ_BUILD)/afl/qimg

# fixed seed, empty corpus: the same run here and in CI (random exploration is `make fuzz`)
fuzz-smoke: fuzz-build
	@rm -rf $(FUZZ_BUILD)/smoke-corpus $(FUZZ_BUILD)/artifacts
	@FUZZ_SEED=$(FUZZ_SMOKE_SEED) FUZZ_RUNS="$(FUZZ_SMOKE_RUNS)" \
	  FUZZ_CORPUS=$(FUZZ_BUILD)/smoke-corpus FUZZ_BUILD=$(FUZZ_BUILD) \
	  fuzz/run.sh $(FUZZ_SMOKE_SECS) $(FUZZ_JOBS) $(FUZZ_TARGETS)
	@FUZZ_SEED=$(FUZZ_SMOKE_SEED) FUZZ_BUILD=$(FUZZ_BUILD) \
	  fuzz/run.sh $(FUZZ_SMOKE_AFL_SECS) $(FUZZ_JOBS) afl-check afl-map

fuzz: fuzz-build
	@FUZZ_BUILD=$(FUZZ_BUILD) fuzz/run.sh $(FUZZ_SECS) $(FUZZ_JOBS) $(FUZZ_TARGETS) afl-check afl-map

# Coverage: the fuzz targets built with source-based coverage, run over the seeds, the
# regressions and whatever corpora the fuzz runs saved in $(FUZZ_BUILD)/corpus.
$(FUZZ_BUILD)/cov/libqimg.a: FORCE_FUZZLIB
	@$(MAKE) --no-print-directory QIMG_FUZZ_SUBMAKE=1 BUILD=$(FUZZ_BUILD)/cov CC=$(FUZZ_CC) OPT=-O1 \
	  SANFLAGS="-fprofile-instr-generate -fcoverage-mapping" $@

$(FUZZ_BUILD)/cov/fuzz_%: fuzz/fuzz_%.c $(FUZZ_COMMON) fuzz/replay_main.c $(FUZZ_BUILD)/cov/libqimg.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fprofile-instr-generate -fcoverage-mapping -o $@ $< \
	  $(FUZZ_COMMON) fuzz/replay_main.c $(FUZZ_BUILD)/cov/libqimg.a $(LIBS)

fuzz-cov: fuzz-deps
	$(MAKE) $(COV_BINS)
	@FUZZ_BUILD=$(FUZZ_BUILD) fuzz/coverage.sh $(FUZZ_TARGETS)

endif

# Replay with the normal toolchain: part of `make test`.
$(BUILD)/fuzz-replay/fuzz_%: fuzz/fuzz_%.c $(FUZZ_COMMON) fuzz/replay_main.c fuzz/fuzz_common.h $(BUILD)/libqimg.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(FUZZ_COMMON) fuzz/replay_main.c $(BUILD)/libqimg.a $(LDFLAGS) $(LIBS)

replay: $(REPLAY_BINS) $(BUILD)/qimg
	@BUILD=$(BUILD) fuzz/replay.sh $(FUZZ_TARGETS)

golden: $(BUILD)/qimg
	@QIMG=$(CURDIR)/$(BUILD)/qimg golden/run.sh

golden-regen:
	golden/regen.sh

valgrind: $(BUILD)/qimg
	@scripts/ensure-deps.sh valgrind
	@QIMG=$(CURDIR)/$(BUILD)/qimg QIMG_WRAP="valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite" \
	  golden/run.sh $(if $(VALGRIND_STEPS),--steps=$(VALGRIND_STEPS))

.PHONY: FORCE_FUZZLIB
FORCE_FUZZLIB:
