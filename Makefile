# pathformer build. `make` probes for OpenMP, a CBLAS and MPI with a real compile, prints what it
# found, and builds what it can. Switches: NO_OMP=1, NO_BLAS=1, NO_MPI=1.
#   make run    install missing packages, build, and run the main job (`pathformer run`, quick preset)
#   make test   install missing packages, build, and run every test (optimized + sanitizer + browser)
#   make published  the published numbers in about five minutes: fine-tuning and every test from the
#               authors' pre-trained weights (`pathformer run --from`, preset blog)
#   make asan   the sanitizer (ASan + UBSan) build of the tests and the binary
#   make layers the layout's rules: one-way dependencies between the areas of src/, no cycles
#   make bench  benchmarks, with the PyTorch baseline measured in the same run
#   make bench-exchange  the data-parallel gradient exchange over MPI on this machine, 2 to 4 ranks
#   make install / uninstall   PREFIX (default /usr/local) and DESTDIR, as Unix tools do

CC ?= cc
# No -march: the kernels come in one variant per instruction set (below), chosen at run time, so a
# binary built here runs at full speed on any x86-64 (or ARM64) machine.
CFLAGS ?= -O3
# `override`: a CFLAGS given on the command line (make CFLAGS="-O3 -march=x86-64-v3") replaces the
# default above but still gets the flags the build needs, as one from the environment does.
# -ffp-contract=off: the compiler fuses no multiply and add on its own, so every sum is the one the
# source writes, on every instruction set (README: Reproducibility).
override CFLAGS += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -ffp-contract=off -Isrc
LDLIBS = -lcjson -lm
BUILD ?= build
SAN_FLAGS = -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

# A feature is there when its probe program (probe/NAME.c) compiles and links.
probe = $(shell $(CC) probe/$(1).c -o /dev/null $(2) >/dev/null 2>&1 && echo yes)

ifeq ($(NO_OMP),)
HAVE_OMP := $(call probe,openmp,-fopenmp)
endif
ifeq ($(HAVE_OMP),yes)
override CFLAGS += -fopenmp
LDLIBS += -fopenmp
endif

ifeq ($(NO_BLAS),)
HAVE_BLAS := $(call probe,cblas,-lopenblas)
endif
ifeq ($(HAVE_BLAS),yes)
override CFLAGS += -DPF_HAVE_BLAS
LDLIBS += -lopenblas
endif

# MPI (Debian: libopenmpi-dev): `pathformer` is then linked with it (src/dist_mpi.c, data-parallel
# training under mpirun or srun; alone it still runs as one process) and the exchange benchmark is
# built. Without it, src/dist_single.c stands in. Tests, sanitizer and fuzz builds always use the
# one-process side; the MPI tests run the `pathformer` binary under mpirun (tests/mpi_test.sh).
MPICC ?= mpicc
ifeq ($(NO_MPI),)
HAVE_MPI := $(shell $(MPICC) probe/mpi.c -o /dev/null >/dev/null 2>&1 && echo yes)
endif

HAVE_CJSON := $(call probe,cjson,-lcjson)
HAVE_CMOCKA := $(call probe,cmocka,-lcmocka)

# The kernels (src/ops/lanes.h) are compiled once per variant, each object named after its
# variant (build/obj/ops/gemm-avx2.o): on x86-64 AVX-512, AVX2 + FMA and plain x86-64 (-mno-sse3:
# the baseline's SSE2 alone, whatever CFLAGS says), on ARM64 NEON, elsewhere plain C.
MACHINE := $(shell $(CC) -dumpmachine)
ifneq ($(findstring x86_64,$(MACHINE)),)
VARIANTS := avx512 avx2 plain
override CFLAGS += -DPF_KERNELS_SIMD
else ifneq ($(findstring aarch64,$(MACHINE)),)
VARIANTS := neon
else
VARIANTS := plain
endif
VARIANT_FLAGS_avx512 = -DPF_VARIANT=avx512 -DPF_LANES_AVX512 -mavx512f -mavx512dq -mfma
VARIANT_FLAGS_avx2 = -DPF_VARIANT=avx2 -DPF_LANES_AVX2 -mavx2 -mfma -mno-avx512f
VARIANT_FLAGS_neon = -DPF_VARIANT=neon -DPF_LANES_NEON
ifneq ($(findstring x86_64,$(MACHINE)),)
VARIANT_FLAGS_plain = -DPF_VARIANT=plain -mno-sse3
else
VARIANT_FLAGS_plain = -DPF_VARIANT=plain
endif
KERNEL_SRC := src/ops/gemm.c src/ops/ops_kernels.c src/bfs/bfs_kernels.c
KERNEL_NAMES := $(KERNEL_SRC:src/%.c=%)

# The core in src/, each area in a folder of its own (README: Layout). Objects mirror the source
# tree (build/obj/ops/ops.o), so files of the same name in two areas do not collide.
AREAS := ops experiment bfs interp
LIB_SRC := $(filter-out src/main.c src/dist_mpi.c $(KERNEL_SRC),$(wildcard src/*.c $(AREAS:%=src/%/*.c)))
KERNEL_OBJ = $(foreach v,$(VARIANTS),$(KERNEL_NAMES:%=$(1)/%-$(v).o))
LIB_OBJ := $(LIB_SRC:src/%.c=$(BUILD)/obj/%.o) $(call KERNEL_OBJ,$(BUILD)/obj)
SAN_OBJ := $(LIB_SRC:src/%.c=$(BUILD)/asan/%.o) $(call KERNEL_OBJ,$(BUILD)/asan)
HEADERS := $(wildcard src/*.h $(AREAS:%=src/%/*.h))
TEST_SRC := $(wildcard tests/test_*.c)
TESTS := $(TEST_SRC:tests/%.c=$(BUILD)/%)
SAN_TESTS := $(TEST_SRC:tests/%.c=$(BUILD)/asan/%)
BENCH_SRC := $(wildcard bench/*.c)
BENCHES := $(BENCH_SRC:bench/%.c=$(BUILD)/%)

.PHONY: all probe deps run published test check layers asan bench bench-ab bench-exchange fuzz fuzz-build clean install uninstall
all: probe pathformer $(BENCHES) $(if $(HAVE_MPI),$(BUILD)/bench_exchange)

probe:
	@echo "pathformer build: cc=$(CC) openmp=$(or $(HAVE_OMP),no) blas=$(or $(HAVE_BLAS),no) cjson=$(or $(HAVE_CJSON),no) cmocka=$(or $(HAVE_CMOCKA),no) mpi=$(or $(HAVE_MPI),no)"
	@test "$(HAVE_CJSON)" = yes || { echo "error: libcjson not found (apt-get install libcjson-dev)"; exit 1; }

ifeq ($(HAVE_MPI),yes)
pathformer: $(filter-out $(BUILD)/obj/dist_single.o,$(LIB_OBJ)) $(BUILD)/obj/dist_mpi.o $(BUILD)/obj/main.o
	$(MPICC) $(CFLAGS) -o $@ $^ $(LDLIBS)
else
pathformer: $(LIB_OBJ) $(BUILD)/obj/main.o
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)
endif

$(BUILD)/obj/dist_mpi.o: src/dist_mpi.c $(HEADERS) Makefile
	@mkdir -p $(@D)
	$(MPICC) $(CFLAGS) -c -o $@ $<

$(BUILD)/obj/%.o: src/%.c $(HEADERS) Makefile
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/asan/%.o: src/%.c $(HEADERS) Makefile
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(SAN_FLAGS) -c -o $@ $<

# One rule per variant for the kernels' objects (optimized and sanitizer builds).
define VARIANT_RULES
$(BUILD)/obj/%-$(1).o: src/%.c $(HEADERS) Makefile
	@mkdir -p $$(@D)
	$$(CC) $$(CFLAGS) $$(VARIANT_FLAGS_$(1)) -c -o $$@ $$<
$(BUILD)/asan/%-$(1).o: src/%.c $(HEADERS) Makefile
	@mkdir -p $$(@D)
	$$(CC) $$(CFLAGS) $$(SAN_FLAGS) $$(VARIANT_FLAGS_$(1)) -c -o $$@ $$<
endef
$(foreach v,$(VARIANTS),$(eval $(call VARIANT_RULES,$(v))))

$(BUILD)/test_%: tests/test_%.c tests/testutil.h $(LIB_OBJ) $(HEADERS)
	$(CC) $(CFLAGS) -o $@ $< $(LIB_OBJ) $(LDLIBS) -lcmocka

$(BUILD)/asan/test_%: tests/test_%.c tests/testutil.h $(SAN_OBJ) $(HEADERS)
	$(CC) $(CFLAGS) $(SAN_FLAGS) -o $@ $< $(SAN_OBJ) $(LDLIBS) -lcmocka

$(BUILD)/asan/pathformer: $(SAN_OBJ) $(BUILD)/asan/main.o
	$(CC) $(CFLAGS) $(SAN_FLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/bench_%: bench/bench_%.c $(LIB_OBJ) $(HEADERS)
	$(CC) $(CFLAGS) -o $@ $< $(LIB_OBJ) $(LDLIBS)

asan: $(SAN_TESTS) $(BUILD)/asan/pathformer

deps:
	@bash scripts/deps.sh

# Sub-makes after deps, so that the probes see what deps installed.
# The whole experiment with the standard preset (about 30 minutes on 2 cores); PRESET=quick is the
# few-minute demo.
PRESET ?= standard
run: deps
	@$(MAKE) --no-print-directory all
	./pathformer run --preset $(PRESET) $(ARGS)

AUTHORS_WEIGHTS ?= ../shared/reference/authors_pretrained.safetensors
published: deps
	@$(MAKE) --no-print-directory all
	./pathformer run --from $(AUTHORS_WEIGHTS) $(ARGS)

# The builds in parallel, one job per core (JOBS), then the tests one after another.
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
test: deps
	@$(MAKE) --no-print-directory -j$(JOBS) probe pathformer $(TESTS) asan fuzz-build
	@$(MAKE) --no-print-directory check

# Unit tests run twice: the optimized build (all tests, including PyTorch parity and the authors'
# checkpoint) and the sanitizer build (the same tests; the slow ones size themselves down under
# PF_SANITIZER=1); then the layout check, the browser test and each fuzz target for a few seconds.
check: probe pathformer $(TESTS) asan fuzz-build
	@bash tests/run_tests.sh $(BUILD)

# `make install`: the binary in PREFIX/bin; the report's plotting libraries (with their licences)
# and the .pth converter in PREFIX/share/pathformer, where the installed binary finds them with no
# PATHFORMER_HOME and no npm; the licence and release notes in PREFIX/share/doc/pathformer.
PREFIX ?= /usr/local
SHARE_FILES := $(foreach lib,vega vega-lite vega-embed,node_modules/$(lib)/build/$(lib).min.js node_modules/$(lib)/LICENSE) \
	scripts/pth_to_safetensors.py
DOC_FILES := LICENSE RELEASE-NOTES.md README.md
install: pathformer
	@for f in $(SHARE_FILES); do test -f $$f || { echo "error: $$f is missing (run npm ci first)"; exit 1; }; done
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 pathformer $(DESTDIR)$(PREFIX)/bin/pathformer
	for f in $(SHARE_FILES); do install -D -m 644 $$f $(DESTDIR)$(PREFIX)/share/pathformer/$$f || exit 1; done
	for f in $(DOC_FILES); do install -D -m 644 $$f $(DESTDIR)$(PREFIX)/share/doc/pathformer/$$f || exit 1; done

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/pathformer
	rm -rf $(DESTDIR)$(PREFIX)/share/pathformer $(DESTDIR)$(PREFIX)/share/doc/pathformer

# libFuzzer targets (fuzz/fuzz_NAME.c, clang with ASan + UBSan) over every parser of outside input;
# `make fuzz` runs each for FUZZ_SECONDS from its seed corpus (fuzz/corpus/NAME) and the inputs
# that once crashed it (fuzz/regressions/NAME, each run first), keeping what it finds in
# $(BUILD)/fuzz/corpus-NAME. Built with the plain kernels alone: the parsers are the target, and
# the AVX-512 kernels under clang's sanitizers take minutes to compile.
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_FLAGS = -g -O1 -std=c11 -D_GNU_SOURCE -Isrc -Wno-unknown-pragmas -fno-omit-frame-pointer -ffp-contract=off \
	-fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_VARIANT := $(if $(findstring aarch64,$(MACHINE)),neon,plain)
FUZZ_OBJ := $(LIB_SRC:src/%.c=$(BUILD)/fuzz/%.o) $(KERNEL_NAMES:%=$(BUILD)/fuzz/%-$(FUZZ_VARIANT).o)
FUZZ_TARGETS := $(patsubst fuzz/fuzz_%.c,%,$(wildcard fuzz/fuzz_*.c))
FUZZERS := $(FUZZ_TARGETS:%=$(BUILD)/fuzz/fuzz_%)

$(BUILD)/fuzz/%.o: src/%.c $(HEADERS) Makefile
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(BUILD)/fuzz/%-$(FUZZ_VARIANT).o: src/%.c $(HEADERS) Makefile
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) $(VARIANT_FLAGS_$(FUZZ_VARIANT)) -fsanitize=fuzzer-no-link -c -o $@ $<

$(BUILD)/fuzz/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz.h $(FUZZ_OBJ)
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_OBJ) -lcjson -lm

.SECONDARY: $(FUZZ_OBJ)
fuzz-build: $(FUZZERS)

fuzz: fuzz-build
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p $(BUILD)/fuzz/corpus-$$t; \
		echo "=== fuzz $$t for $(FUZZ_SECONDS) s"; \
		$(BUILD)/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
			-artifact_prefix=$(BUILD)/fuzz/crash-$$t- $(BUILD)/fuzz/corpus-$$t fuzz/corpus/$$t \
			$$(test -d fuzz/regressions/$$t && echo fuzz/regressions/$$t) > $(BUILD)/fuzz/$$t.log 2>&1; status=$$?; \
		grep -E "stat::number_of_executed_units|SUMMARY" $(BUILD)/fuzz/$$t.log; \
		[ $$status -eq 0 ] || { tail -40 $(BUILD)/fuzz/$$t.log; exit 1; }; \
	done

# The layout's rules alone (make check runs them too): one-way dependencies between areas, no cycles.
layers: pathformer
	python3 scripts/check_layers.py --objects $(BUILD)/obj

# Training and inference at the published batch of 2^15 (median of 3 steps), then data generation;
# each next to its baseline (PyTorch, Python) measured in the same run.
# The exchange of one step's gradient between K ranks on this machine (bench/mpi/bench_exchange.c);
# README: Scaling out.
$(BUILD)/bench_exchange: bench/mpi/bench_exchange.c $(BUILD)/obj/dist.o src/dist.h
	@mkdir -p $(BUILD)
	$(MPICC) $(CFLAGS) -o $@ $< $(BUILD)/obj/dist.o
EXCHANGE_ROUNDS ?= 20
bench-exchange: probe
	@test "$(HAVE_MPI)" = yes || { echo "error: no MPI compiler (apt-get install libopenmpi-dev openmpi-bin)"; exit 1; }
	@$(MAKE) --no-print-directory $(BUILD)/bench_exchange
	@for k in 2 3 4; do mpirun --oversubscribe $$( [ "$$(id -u)" = 0 ] && echo --allow-run-as-root) -np $$k \
		$(BUILD)/bench_exchange $(EXCHANGE_ROUNDS) || exit 1; done

bench: all
	$(BUILD)/bench_train 32768 3 2
	$(BUILD)/bench_data

# `make bench-ab BASE=REV [AB_ARGS="PAIRS BATCH THREADS VARIANT..."]`: this tree's kernels against
# git revision REV's, in one process, rounds alternating (bench/ab/bench_ab.c; README: Benchmarks).
# REV's src/ops/gemm.c and ops_kernels.c are built once per variant as "<variant>_base", against this
# tree's interface headers (backend.h, kernels.h, gemm.h: the packed weights' layout is this tree's),
# in build/ab/REV.
AB := $(BUILD)/ab/$(or $(BASE),none)
AB_NAMES := ops/gemm ops/ops_kernels
AB_OBJ := $(foreach v,$(VARIANTS),$(AB_NAMES:%=$(AB)/obj/%-$(v).o))
define AB_RULES
$(AB)/obj/%-$(1).o: $(AB)/src/%.c
	@mkdir -p $$(@D)
	$$(CC) -I$(AB)/src $$(CFLAGS) $$(VARIANT_FLAGS_$(1)) -UPF_VARIANT -DPF_VARIANT=$(1)_base -c -o $$@ $$<
endef
$(foreach v,$(VARIANTS),$(eval $(call AB_RULES,$(v))))

$(AB)/bench_ab: bench/ab/bench_ab.c $(LIB_OBJ) $(AB_OBJ) $(HEADERS)
	$(CC) $(CFLAGS) -o $@ $< $(LIB_OBJ) $(AB_OBJ) $(LDLIBS)

bench-ab: probe
	@test -n "$(BASE)" || { echo "error: make bench-ab BASE=REV: REV names the git revision whose kernels to time against"; exit 1; }
	@git rev-parse -q --verify "$(BASE)^{commit}" >/dev/null || { echo "error: BASE=$(BASE) is not a revision of this repository"; exit 1; }
	rm -rf $(AB) && mkdir -p $(AB) && git archive "$(BASE)" src/ops | tar -x -C $(AB)
	cp src/ops/backend.h src/ops/kernels.h src/ops/gemm.h $(AB)/src/ops/
	@$(MAKE) --no-print-directory $(AB)/bench_ab
	PF_AB_BASE="$(BASE)" $(AB)/bench_ab $(AB_ARGS)

clean:
	rm -rf $(BUILD) pathformer
