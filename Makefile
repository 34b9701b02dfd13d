# statecache - GNU make build.
#
#   make               libstatecache.a, libstatecache.so and the statecache
#                      command (build/release/)
#   make demo          install missing packages, build, run `statecache demo`
#   make test          install missing packages; unit, property, stress and
#                      CLI tests under ASan+UBSan, concurrency tests under
#                      TSan, a short run of every fuzzer, a clang -Werror
#                      build, the examples built against an installed copy
#                      and checks of the release build (make test-api),
#                      and the cluster tests on three local nats-server
#                      processes (make test-cluster)
#   make bench [BENCH=name]   benchmarks (JSON lines on stdout)
#   make fuzz [FUZZ_SECONDS=n] run every fuzzer for minutes
#   make crashtest     the long crash-recovery run
#   make coverage      the unit, property, stress, crash and CLI tests on a
#                      gcov build; line and branch coverage per library file
#                      in build/coverage/summary.txt
#   make install PREFIX=/usr/local
#   make deps          install missing Debian packages (as root) or print
#                      the apt-get command
#   make format        clang-format every source file
#
# MODE selects the flavour of a build tree: release (default), asan, tsan,
# debug, clang, fuzz, coverage. Each builds into build/$(MODE).

MODE ?= release
PREFIX ?= /usr/local
BUILD ?= build/$(MODE)
# Layers compiled into the library; a subset helps while a layer is broken.
LAYERS ?= common hamt cache snapshot store watch
# Glob that selects test programs (tests/test_$(ONLY).c), default all.
ONLY ?= *
FUZZ_RUNS ?= 20000
FUZZ_SECONDS ?= 120
BENCH ?=
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

ifeq ($(MODE),fuzz)
CC := clang
endif
ifeq ($(MODE),clang)
CC := clang
endif
ifeq ($(origin CC),default)
CC := gcc
endif

DEBIAN_PACKAGES := gcc make pkg-config clang libclang-rt-14-dev \
	liblmdb-dev lmdb-utils libprotobuf-c-dev protobuf-c-compiler \
	libzstd-dev libxxhash-dev libjansson-dev liburcu-dev libcmocka-dev \
	libglib2.0-dev libsqlite3-dev nats-server libnats-dev

LIB_PKGS := lmdb libprotobuf-c libzstd libxxhash
CLI_PKGS := $(LIB_PKGS) jansson
TEST_PKGS := $(CLI_PKGS) cmocka
BENCH_PKGS := $(CLI_PKGS) glib-2.0 sqlite3 liburcu-memb liburcu-cds

pkgcflags = $(shell pkg-config --cflags $(1) 2>/dev/null)
pkglibs = $(shell pkg-config --libs $(1) 2>/dev/null)

ARCH := $(shell uname -m)
ARCH_FLAGS := $(if $(filter x86_64,$(ARCH)),-mpopcnt,)

BASE_CFLAGS := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror \
	-Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla \
	-fPIC $(ARCH_FLAGS) -Iinclude -I. -I$(BUILD)/gen

# Test builds (every mode but release) compile in the crash tests' kill
# points (common/killpoint.c); a release build has none.
KILLPOINTS := -DSC_KILLPOINTS

ifeq ($(MODE),release)
MODE_CFLAGS := -O2 -g -DNDEBUG
else ifeq ($(MODE),clang)
MODE_CFLAGS := -O2 -g -DNDEBUG $(KILLPOINTS)
else ifeq ($(MODE),asan)
MODE_CFLAGS := -O1 -g -fno-omit-frame-pointer -DSC_DEBUG $(KILLPOINTS) \
	-fsanitize=address,undefined -fno-sanitize-recover=all
MODE_LDFLAGS := -fsanitize=address,undefined
else ifeq ($(MODE),tsan)
MODE_CFLAGS := -O1 -g -fno-omit-frame-pointer -DSC_DEBUG $(KILLPOINTS) \
	-fsanitize=thread
MODE_LDFLAGS := -fsanitize=thread
else ifeq ($(MODE),debug)
MODE_CFLAGS := -O0 -g -DSC_DEBUG $(KILLPOINTS)
else ifeq ($(MODE),fuzz)
MODE_CFLAGS := -O1 -g -fno-omit-frame-pointer -DSC_DEBUG -DSC_FUZZING \
	$(KILLPOINTS) \
	-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all
MODE_LDFLAGS := -fsanitize=fuzzer,address,undefined
else ifeq ($(MODE),coverage)
MODE_CFLAGS := -O0 -g -DSC_DEBUG $(KILLPOINTS) --coverage \
	-fprofile-update=atomic
MODE_LDFLAGS := --coverage
else
$(error unknown MODE '$(MODE)': release, asan, tsan, debug, clang, fuzz or coverage)
endif

CFLAGS_ALL = $(BASE_CFLAGS) $(MODE_CFLAGS) $(call pkgcflags,$(TEST_PKGS)) $(CFLAGS)
LDFLAGS_ALL = $(MODE_LDFLAGS) $(LDFLAGS)
LIB_LIBS = $(call pkglibs,$(LIB_PKGS)) -lpthread -lm

# ---- cluster (optional: only with the NATS C client) ---------------------------
#
# cluster/ is built into its own static library, libstatecache_cluster.a,
# when pkg-config finds libnats; the core library never needs it. The
# command, the tests, the fuzzers and the benchmarks link it then, and the
# command's publish and follow work; without it they say the build lacks
# NATS support. `make test-cluster` (part of `make test`) runs the cluster
# tests on three nats-server processes it starts itself.

HAVE_NATS := $(shell pkg-config --exists libnats 2>/dev/null && echo 1)
NATS_SERVER := $(shell command -v nats-server 2>/dev/null)
CLUSTER_SRC := $(wildcard cluster/*.c)
CLUSTER_OBJ := $(CLUSTER_SRC:%.c=$(BUILD)/obj/%.o)
CLUSTER_LIB := $(BUILD)/libstatecache_cluster.a
CLUSTER_TEST_SRC := tests/test_cluster.c
CLUSTER_TEST_BIN := $(BUILD)/tests/test_cluster
# What a program linking the command's objects adds: the cluster library
# (between libsccli.a and libstatecache.a) and the NATS client.
CLUSTER_LINK := $(if $(HAVE_NATS),$(CLUSTER_LIB))
CLUSTER_LIBS := $(if $(HAVE_NATS),$(call pkglibs,libnats))

# ---- sources ------------------------------------------------------------------

PROTO := $(wildcard proto/statecache/v1/*.proto)
PROTO_C := $(patsubst proto/%.proto,$(BUILD)/gen/%.pb-c.c,$(PROTO))
PROTO_H := $(PROTO_C:.c=.h)

LIB_SRC := $(wildcard $(addsuffix /*.c,$(LAYERS)))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/obj/%.o) $(PROTO_C:%.c=%.o)
# The library exports only what the headers mark SC_API
# (include/statecache/api.h). Tests, fuzzers and the command link the
# static library and may still call internal functions.
$(LIB_OBJ): CFLAGS_ALL += -fvisibility=hidden
CLI_SRC := $(wildcard cli/*.c)
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
# Everything of the command but main(): tests and fuzzers link it too.
CLI_LIB_OBJ := $(filter-out $(BUILD)/obj/cli/main.o,$(CLI_OBJ))
CLI_LIB := $(BUILD)/libsccli.a
# The test kit: helpers, reference models and generators that every test,
# stress and crash program and every fuzzer links as one static library.
TEST_SUPPORT_SRC := $(wildcard tests/support/*.c)
TEST_SUPPORT_OBJ := $(TEST_SUPPORT_SRC:%.c=$(BUILD)/obj/%.o)
TEST_LIB := $(BUILD)/libsctest.a
TEST_SRC := $(filter-out $(CLUSTER_TEST_SRC),$(wildcard tests/test_$(ONLY).c))
TEST_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
STRESS_SRC := $(wildcard tests/stress_$(ONLY).c)
STRESS_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(STRESS_SRC))
# Tests whose threads ThreadSanitizer checks too (make test-tsan).
TSAN_TEST_BIN := $(filter $(BUILD)/tests/test_cache_lanes,$(TEST_BIN))
# Crash tests need kill points, which a release build does not have.
CRASH_SRC := $(if $(filter release,$(MODE)),,$(wildcard tests/crash_$(ONLY).c))
CRASH_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(CRASH_SRC))
SHELL_TESTS := $(filter-out tests/test_cluster.sh,$(wildcard tests/test_$(ONLY).sh))
FUZZ_SRC := $(wildcard fuzz/*.c)
FUZZ_BIN := $(patsubst fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRC))
BENCH_SRC := $(if $(HAVE_NATS),$(wildcard bench/*.c),$(filter-out bench/cluster.c,$(wildcard bench/*.c)))
BENCH_BIN := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))
EXAMPLE_SRC := $(wildcard examples/*.c)

STATIC_LIB := $(BUILD)/libstatecache.a
SHARED_LIB := $(BUILD)/libstatecache.so
CLI_BIN := $(BUILD)/statecache
CLI_TARGET := $(if $(CLI_SRC),$(CLI_BIN))

.PHONY: all lib cli tests stress crash fuzzers benches deps demo test \
	test-asan test-tsan test-fuzz test-clang test-examples test-api bench fuzz \
	crashtest coverage coverage-deps install clean format

all: lib $(CLI_TARGET)
lib: $(STATIC_LIB) $(SHARED_LIB) $(CLUSTER_LINK)
cli: $(CLI_BIN)
tests: $(TEST_BIN) $(STRESS_BIN) $(CRASH_BIN) $(CLI_TARGET)
stress: $(STRESS_BIN) $(TSAN_TEST_BIN)
crash: $(CRASH_BIN) $(CLI_TARGET)
fuzzers: $(FUZZ_BIN)
benches: $(BENCH_BIN) $(CLI_TARGET)

# ---- rules ---------------------------------------------------------------------

$(BUILD)/gen/%.pb-c.c $(BUILD)/gen/%.pb-c.h: proto/%.proto
	@mkdir -p $(BUILD)/gen
	protoc-c --c_out=$(BUILD)/gen -Iproto $<

$(BUILD)/gen/%.pb-c.o: $(BUILD)/gen/%.pb-c.c
	$(CC) $(filter-out -Wextra -Werror,$(CFLAGS_ALL)) -c $< -o $@

$(BUILD)/obj/%.o: %.c | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -MMD -MP -c $< -o $@

$(STATIC_LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

$(SHARED_LIB): $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,libstatecache.so.0 $(LDFLAGS_ALL) -o $@ $^ $(LIB_LIBS)

$(CLI_LIB): $(CLI_LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

$(CLI_BIN): $(BUILD)/obj/cli/main.o $(CLI_LIB) $(CLUSTER_LINK) $(STATIC_LIB)
	$(CC) $(LDFLAGS_ALL) -o $@ $(BUILD)/obj/cli/main.o $(CLI_LIB) \
		$(CLUSTER_LINK) $(STATIC_LIB) \
		$(call pkglibs,$(CLI_PKGS)) $(CLUSTER_LIBS) -lpthread -lm

$(TEST_LIB): $(TEST_SUPPORT_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(TEST_LIB) $(CLI_LIB) $(CLUSTER_LINK) $(STATIC_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $< $(TEST_LIB) $(CLI_LIB) $(CLUSTER_LINK) \
		$(STATIC_LIB) $(call pkglibs,$(TEST_PKGS)) $(CLUSTER_LIBS) \
		-lpthread -lm

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(CLI_LIB) $(CLUSTER_LINK) $(STATIC_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $< $(CLI_LIB) $(CLUSTER_LINK) $(STATIC_LIB) \
		$(call pkglibs,$(BENCH_PKGS)) $(CLUSTER_LIBS) -lpthread -lm

$(BUILD)/obj/bench/%.o: bench/%.c | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(call pkgcflags,$(BENCH_PKGS)) -MMD -MP -c $< -o $@

$(BUILD)/fuzz/%: $(BUILD)/obj/fuzz/%.o $(TEST_LIB) $(CLI_LIB) $(CLUSTER_LINK) $(STATIC_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $< $(TEST_LIB) $(CLI_LIB) $(CLUSTER_LINK) \
		$(STATIC_LIB) $(call pkglibs,$(CLI_PKGS)) $(CLUSTER_LIBS) \
		-lpthread -lm

$(CLUSTER_LIB): $(CLUSTER_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

$(CLUSTER_OBJ) $(BUILD)/obj/cli/cmd_cluster.o $(BUILD)/obj/tests/test_cluster.o \
	$(BUILD)/obj/bench/cluster.o: CFLAGS_ALL += $(if $(HAVE_NATS),-DSC_HAVE_NATS \
	$(call pkgcflags,libnats))

# Keep objects and generated sources that pattern chains would delete.
.SECONDARY:

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# ---- set-up --------------------------------------------------------------------

deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | \
			grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
		echo "installing:$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	else \
		echo "missing packages; run as root:"; \
		echo "  apt-get update && apt-get install -y$$missing"; \
		exit 1; \
	fi

# ---- the two commands ----------------------------------------------------------

DEMO_DB ?= build/demo.db

demo: deps
	$(MAKE) --no-print-directory -j$(JOBS) MODE=release all
	rm -rf $(DEMO_DB)
	build/release/statecache --db $(DEMO_DB) demo

test: deps
	$(MAKE) --no-print-directory -j$(JOBS) MODE=asan tests
	$(MAKE) --no-print-directory MODE=asan test-asan
	$(MAKE) --no-print-directory -j$(JOBS) MODE=tsan stress
	$(MAKE) --no-print-directory MODE=tsan test-tsan
	$(MAKE) --no-print-directory -j$(JOBS) MODE=fuzz fuzzers
	$(MAKE) --no-print-directory MODE=fuzz test-fuzz
	$(MAKE) --no-print-directory -j$(JOBS) MODE=clang all tests
	$(MAKE) --no-print-directory MODE=clang test-clang
	$(MAKE) --no-print-directory -j$(JOBS) MODE=release all
	$(MAKE) --no-print-directory MODE=release test-examples
	$(MAKE) --no-print-directory MODE=release test-api
	$(MAKE) --no-print-directory powerloss-short
	$(MAKE) --no-print-directory test-cluster
	@echo "make test: all passed"

export ASAN_OPTIONS := abort_on_error=0:detect_leaks=1:strict_string_checks=1
export UBSAN_OPTIONS := halt_on_error=1:print_stacktrace=1
export TSAN_OPTIONS := halt_on_error=1:second_deadlock_stack=1

# Runs every test binary and shell test; the summary line counts them.
test-asan: tests
	@pass=0; fail=0; \
	for t in $(TEST_BIN) $(STRESS_BIN) $(CRASH_BIN); do \
		echo "== $$t"; \
		if SC_TEST_SHORT=1 $$t; then pass=$$((pass+1)); \
		else echo "FAILED: $$t"; fail=$$((fail+1)); fi; \
	done; \
	for t in $(SHELL_TESTS); do \
		echo "== $$t"; \
		if STATECACHE=$(abspath $(CLI_BIN)) bash $$t; then pass=$$((pass+1)); \
		else echo "FAILED: $$t"; fail=$$((fail+1)); fi; \
	done; \
	echo "$(MODE): $$pass passed, $$fail failed"; test $$fail = 0

# The unit tests once more, optimised and without SC_DEBUG: what the
# assertions compile out must not change what the code does.
test-clang: tests
	@pass=0; fail=0; \
	for t in $(TEST_BIN); do \
		echo "== $$t"; \
		if SC_TEST_SHORT=1 $$t; then pass=$$((pass+1)); \
		else echo "FAILED: $$t"; fail=$$((fail+1)); fi; \
	done; \
	echo "clang: $$pass passed, $$fail failed"; test $$fail = 0

test-tsan: stress
	@pass=0; fail=0; \
	for t in $(STRESS_BIN) $(TSAN_TEST_BIN); do \
		echo "== $$t"; \
		if SC_TEST_SHORT=1 $$t; then pass=$$((pass+1)); \
		else echo "FAILED: $$t"; fail=$$((fail+1)); fi; \
	done; \
	echo "tsan: $$pass passed, $$fail failed"; test $$fail = 0

test-fuzz: fuzzers
	@for f in $(FUZZ_BIN); do \
		name=$$(basename $$f); \
		mkdir -p $(BUILD)/corpus/$$name fuzz/corpus/$$name; \
		echo "== fuzz $$name ($(FUZZ_RUNS) runs)"; \
		$$f -runs=$(FUZZ_RUNS) -seed=1 -max_len=4096 \
			$(BUILD)/corpus/$$name fuzz/corpus/$$name 2>$(BUILD)/$$name.log \
			|| { tail -n 40 $(BUILD)/$$name.log; exit 1; }; \
		tail -n 1 $(BUILD)/$$name.log; \
	done

fuzz: deps
	$(MAKE) --no-print-directory -j$(JOBS) MODE=fuzz fuzzers
	@for f in build/fuzz/fuzz/*; do \
		name=$$(basename $$f); \
		mkdir -p build/fuzz/corpus/$$name fuzz/corpus/$$name; \
		echo "== fuzz $$name ($(FUZZ_SECONDS) s)"; \
		$$f -max_total_time=$(FUZZ_SECONDS) -max_len=4096 \
			build/fuzz/corpus/$$name fuzz/corpus/$$name || exit 1; \
	done

STAGE := $(BUILD)/stage
test-examples:
	rm -rf $(STAGE)
	$(MAKE) --no-print-directory MODE=release install PREFIX=$(abspath $(STAGE))
	@mkdir -p $(BUILD)/examples
	@for e in $(EXAMPLE_SRC); do \
		name=$$(basename $$e .c); \
		echo "== example $$name"; \
		$(CC) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -o $(BUILD)/examples/$$name $$e \
			$$(PKG_CONFIG_PATH=$(abspath $(STAGE))/lib/pkgconfig pkg-config --cflags --libs statecache) \
			-Wl,-rpath,$(abspath $(STAGE))/lib || exit 1; \
		(cd $(BUILD)/examples && ./$$name --self-test) || exit 1; \
	done

# Checks of the release build and the tree: no kill point compiled in; the
# installed library exports exactly the functions its installed headers
# declare; no .c file included; each layer includes only the seams of the
# layers below it (tests/check_*.sh say how).
API_STAGE := $(BUILD)/api-stage
ifneq ($(filter test-api,$(MAKECMDGOALS)),)
ifneq ($(MODE),release)
$(error test-api checks the release build: run it with MODE=release)
endif
endif
test-api: lib $(CLI_TARGET)
	bash tests/check_killpoints.sh $(STATIC_LIB) $(SHARED_LIB) $(CLI_TARGET)
	rm -rf $(API_STAGE)
	$(MAKE) --no-print-directory MODE=release install PREFIX=$(abspath $(API_STAGE)) >/dev/null
	bash tests/check_exports.sh $(API_STAGE)
	bash tests/check_includes.sh

bench: deps
	$(MAKE) --no-print-directory -j$(JOBS) MODE=release benches
	@for b in $(if $(BENCH),build/release/bench/$(BENCH),$(patsubst bench/%.c,build/release/bench/%,$(BENCH_SRC))); do \
		$$b || exit 1; \
	done

# Optimised, with kill points: the clang build (a release build has none).
crashtest: deps
	$(MAKE) --no-print-directory -j$(JOBS) MODE=clang crash
	@for t in $(patsubst tests/%.c,build/clang/tests/%,$(wildcard tests/crash_$(ONLY).c)); do \
		SC_CRASH_KILLS=2000 $$t || exit 1; \
	done

# ---- coverage ------------------------------------------------------------------

# What `make test-asan` runs, on a gcov build (-O0, no sanitizers); then the
# line and branch coverage of every library file, from gcovr. The table is
# printed and kept in build/coverage/summary.txt (gcovr's CSV beside it).
# Not part of `make test`.
COVERAGE_PACKAGES := gcovr
COVERAGE_LAYERS := $(LAYERS)

coverage-deps:
	@$(MAKE) --no-print-directory deps DEBIAN_PACKAGES="$(COVERAGE_PACKAGES)"

coverage: deps coverage-deps
	$(MAKE) --no-print-directory -j$(JOBS) MODE=coverage tests
	find build/coverage -name '*.gcda' -delete
	@$(MAKE) --no-print-directory MODE=coverage test-asan; \
	status=$$?; \
	gcovr -r . --object-directory build/coverage \
		$(foreach l,$(COVERAGE_LAYERS),--filter '$(l)/') \
		--csv build/coverage/coverage.csv || exit 1; \
	awk -F, 'function row(f, lc, lt, bc, bt) { \
			printf "%-30s %13s %7s %13s %8s\n", f, lc "/" lt, \
				sprintf("%.1f%%", 100 * lc / (lt ? lt : 1)), bc "/" bt, \
				bt ? sprintf("%.1f%%", 100 * bc / bt) : "-" } \
		NR == 1 { printf "%-30s %13s %7s %13s %8s\n", "file", "lines", "line %", \
			"branches", "branch %"; next } \
		{ row($$1, $$3, $$2, $$6, $$5); lt += $$2; lc += $$3; bt += $$5; bc += $$6 } \
		END { row("TOTAL", lc, lt, bc, bt) }' \
		build/coverage/coverage.csv > build/coverage/summary.txt; \
	cat build/coverage/summary.txt; \
	exit $$status

# ---- install -------------------------------------------------------------------

install: lib $(CLI_TARGET)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig \
		$(DESTDIR)$(PREFIX)/include/statecache
	$(if $(CLI_TARGET),install -m 755 $(CLI_BIN) $(DESTDIR)$(PREFIX)/bin/statecache)
	install -m 644 $(STATIC_LIB) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(SHARED_LIB) $(DESTDIR)$(PREFIX)/lib/libstatecache.so.0
	ln -sf libstatecache.so.0 $(DESTDIR)$(PREFIX)/lib/libstatecache.so
	install -m 644 $(filter-out include/statecache/cluster.h,$(wildcard include/statecache/*.h)) \
		$(DESTDIR)$(PREFIX)/include/statecache/
	$(if $(HAVE_NATS),install -m 644 include/statecache/cluster.h $(CLUSTER_LIB) \
		$(DESTDIR)$(PREFIX)/include/statecache/)
	$(if $(HAVE_NATS),mv $(DESTDIR)$(PREFIX)/include/statecache/libstatecache_cluster.a \
		$(DESTDIR)$(PREFIX)/lib/)
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@REQUIRES@|$(LIB_PKGS)|' \
		statecache.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/statecache.pc

clean:
	rm -rf build

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

# ---- power loss ----------------------------------------------------------------
#
#   make powerloss [PL_STATES=n] [PL_SEED=n]   crash states per durability
#                      mode, one JSON line per mode (tests/powerloss/)
#   make powerloss-short   the short pass of make test; fails when a mode
#                      breaks its promise or an open crashes

PL_STATES ?= 2000
PL_SEED ?= 1
PL_SHORT_STATES ?= 100
# Crash states inside the creation of data.mdb (before any append was
# acknowledged) that open refuses are counted as corrupt_before_first_ack;
# 1 (creation is atomic) makes them fail the short pass as well.
PL_GATE_CREATE ?= 1
PL_MODES := full consistent nosync nosync-sync
# nosync with the session markers deleted before each open: measured only.
PL_MEASURED := nosync-forced
PL_BIN := $(BUILD)/powerloss

.PHONY: powerloss powerloss-short powerloss-tools

powerloss-tools: $(PL_BIN)/recorder.so $(PL_BIN)/pl_workload $(PL_BIN)/pl_check \
	$(PL_BIN)/pl_maptest

$(PL_BIN)/recorder.so: tests/powerloss/recorder.c tests/powerloss/trace.h
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) -O2 -g -shared -o $@ $< -ldl -lpthread

$(PL_BIN)/pl_%: $(BUILD)/obj/tests/powerloss/%.o $(STATIC_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $< $(STATIC_LIB) $(LIB_LIBS)

powerloss: deps
	$(MAKE) --no-print-directory -j$(JOBS) MODE=release powerloss-tools
	@for m in $(PL_MODES) $(PL_MEASURED); do \
		sh tests/powerloss/run.sh build/release/powerloss $$m \
			$(PL_STATES) $(PL_SEED) || exit 1; \
	done

powerloss-short:
	$(MAKE) --no-print-directory -j$(JOBS) MODE=release powerloss-tools
	sh tests/powerloss/maptest.sh build/release/powerloss
	@for m in $(PL_MODES); do \
		sh tests/powerloss/run.sh build/release/powerloss $$m \
			$(PL_SHORT_STATES) $(PL_SEED) \
			$(if $(filter 1,$(PL_GATE_CREATE)),--gate-create,--gate) \
			|| exit 1; \
	done

# ---- cluster tests -------------------------------------------------------------
#
#   make test-cluster   three nats-server processes with JetStream on
#                       127.0.0.1 (free ports, a temporary folder), started
#                       and stopped by tests/test_cluster.sh, and the
#                       cluster tests of tests/test_cluster.c on them,
#                       once on the ASan build and once on the TSan build
#                       (SC_TEST_SHORT=1 unless set: 20,000 events; 0:
#                       100,000).

.PHONY: test-cluster

test-cluster:
ifeq ($(HAVE_NATS),)
	@echo "test-cluster: SKIPPED: libnats (libnats-dev) is not installed; make deps installs it"
else ifeq ($(NATS_SERVER),)
	@echo "test-cluster: SKIPPED: nats-server is not installed; make deps installs it"
else
	@for m in asan tsan; do \
		$(MAKE) --no-print-directory -j$(JOBS) MODE=$$m build/$$m/statecache \
			build/$$m/tests/test_cluster || exit 1; \
		echo "== test_cluster ($$m)"; \
		SC_TEST_SHORT=$${SC_TEST_SHORT-1} bash tests/test_cluster.sh \
			build/$$m/statecache build/$$m/tests/test_cluster || exit 1; \
	done
endif
