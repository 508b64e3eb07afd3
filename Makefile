# imagefs: build, run, test.
#   make run     build and mount a default store on ./run/mnt (foreground; Ctrl-C unmounts)
#   make start   the same in the background: returns once ./run/mnt is mounted
#   make stop    unmount ./run/mnt and wait until the daemon has released the store
#   make test    every test: unit, vhd and FUSE integration (needs root and /dev/fuse)
#   make test-shared  the integration tests again, each mount on a shared etcd catalog
#   run, start and test first install the Debian packages they need that are
#   missing (scripts/deps.sh; apt-get as root).
#   make conformance  Tempest's Images API tests (tempest.api.image.v2) against a mount's API
#                in keystone mode, with the Keystone of scripts/keystone.sh; the target is
#                integration/conformance/expected-failures.txt (about 1 min; more on a busy machine)
#   make bench   the performance suite and the Go benchmarks, table in bench-out/bench.md (about 20 min; not part of make test);
#                BENCH_ONLY=swift (a regexp of sections) runs those sections alone
#   make fuzz    fuzz the VHD parser (FUZZTIME=3m)
#   make man     write docs/imagefs.1 from the help texts
#   make install install the built ./imagefs and its man page under PREFIX (/usr/local), where
#                mount(8) finds it; never builds: make build, then sudo make install

# go, or Go's default install when go is not on PATH.
GO       ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
BIN      ?= ./imagefs
STORE    ?= ./run/store
MNT      ?= ./run/mnt
FUZZTIME ?= 3m
PREFIX   ?= /usr/local
BENCH_OUT ?= bench-out
# Benchmark catalogs (100,000 images take minutes to build), kept between runs.
IMAGEFS_BENCH_DIR ?= $(abspath $(BENCH_OUT))/catalogs
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LOG      ?= ./run/imagefs.log
# The integration tests run go themselves.
export PATH := $(dir $(GO)):$(PATH)

.PHONY: all build run start stop deps-run deps-test test test-shared conformance unit integration race bench fuzz vet clean man install

all: build

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/imagefs

deps-run:
	@sh scripts/deps.sh run

deps-test:
	@sh scripts/deps.sh test

# The mountpoint's mkdir stays quiet: on a dead mount (a killed daemon) it
# fails, and imagefs's own message says what to do.
run: deps-run build
	@mkdir -p $(STORE); mkdir -p $(MNT) 2>/dev/null || true
	@echo "imagefs: serving $(STORE) at $(MNT); in another shell: mkdir $(MNT)/images/NAME && cp FILE.vhd $(MNT)/images/NAME/image.vhd"
	@echo "imagefs: stop with Ctrl-C, or: $(BIN) umount $(MNT)"
	$(BIN) mount $(STORE) $(MNT)

# The mount helper form: returns once the mount is ready; logs to $(LOG).
start: deps-run build
	@mkdir -p $(STORE) $(dir $(LOG)); mkdir -p $(MNT) 2>/dev/null || true
	$(BIN) $(STORE) $(MNT) -o log_file=$(LOG)
	@echo "imagefs: serving $(STORE) at $(MNT), logging to $(LOG); stop with: make stop"

stop:
	$(BIN) umount $(MNT)

vet:
	$(GO) vet ./...

unit:
	$(GO) test ./store/... ./xattr/... ./vhd/... ./fs/... ./cmd/...

integration:
	$(GO) test -count=1 -timeout 20m ./integration/...

test: deps-test vet
	$(GO) test -count=1 -timeout 20m ./...

# Every single-host integration test with its mount on a shared etcd
# catalog of its own (the etcd test cluster of scripts/etcd.sh).
test-shared: deps-test
	IMAGEFS_TEST_CATALOG=etcd $(GO) test -count=1 -timeout 20m ./integration/

# Tempest's tempest.api.image.v2 against the Images API (scripts/conformance.sh).
conformance: deps-test
	GO=$(GO) bash scripts/conformance.sh

race:
	$(GO) test -race -count=1 -timeout 30m ./...

# One package at a time: the suite's ratios need the machine to itself.
# BENCH_ONLY=REGEXP runs only the suite's sections it matches (upload, read,
# list, scale, views, shared, swift, api), without the Go benchmarks of store/:
# make bench BENCH_ONLY=swift.
bench:
	@mkdir -p $(BENCH_OUT) $(IMAGEFS_BENCH_DIR)
	$(if $(BENCH_ONLY),,IMAGEFS_BENCH_DIR=$(IMAGEFS_BENCH_DIR) $(GO) test -run '^$$' -bench . -benchtime 1s -timeout 30m ./store/ 2>&1 | tee $(BENCH_OUT)/store.txt && grep -q '^ok' $(BENCH_OUT)/store.txt)
	IMAGEFS_BENCH_DIR=$(IMAGEFS_BENCH_DIR) $(GO) test -v -count=1 -run '^TestBenchSuite$$' $(if $(BENCH_ONLY),,-bench . -benchtime 3x) -timeout 60m ./integration/ \
		-args -bench-suite -bench-only '$(BENCH_ONLY)' -bench-out $(abspath $(BENCH_OUT))/bench.md 2>&1 | tee $(BENCH_OUT)/integration.txt && grep -q '^ok' $(BENCH_OUT)/integration.txt
	@echo; cat $(BENCH_OUT)/bench.md

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzInspect -fuzztime $(FUZZTIME) ./vhd/

man: build
	sh docs/mkman.sh $(BIN) > docs/imagefs.1

# install never builds (sudo's PATH has no go): it installs the binary that
# make build made, and its man page, made from that binary's help.
install:
	@test -x $(BIN) || { echo "make install: $(BIN) is missing: run 'make build' first (as yourself, where go is on PATH), then 'sudo make install'" >&2; exit 1; }
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/imagefs
	install -d $(DESTDIR)$(PREFIX)/share/man/man1
	sh docs/mkman.sh $(BIN) > $(DESTDIR)$(PREFIX)/share/man/man1/imagefs.1
	chmod 0644 $(DESTDIR)$(PREFIX)/share/man/man1/imagefs.1

clean:
	rm -f $(BIN)
