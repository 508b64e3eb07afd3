# imagefs: build, run, test.
#   make run     build and mount a default store on ./run/mnt (foreground; Ctrl-C unmounts)
#   make test    every test: unit, vhd and FUSE integration (needs root and /dev/fuse)
#   make bench   the performance suite and the Go benchmarks, table in bench-out/bench.md (about 12 min; not part of make test)
#   make fuzz    fuzz the VHD parser (FUZZTIME=3m)
#   make man     write docs/imagefs.1 from the help texts
#   make install install imagefs and its man page under PREFIX (/usr/local), where mount(8) finds it

GO       ?= go
BIN      ?= ./imagefs
STORE    ?= ./run/store
MNT      ?= ./run/mnt
FUZZTIME ?= 3m
PREFIX   ?= /usr/local
BENCH_OUT ?= bench-out
# Benchmark catalogs (100,000 images take minutes to build), kept between runs.
IMAGEFS_BENCH_DIR ?= $(abspath $(BENCH_OUT))/catalogs
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)

.PHONY: all build run test unit integration race bench fuzz vet clean man install

all: build

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/imagefs

run: build
	@mkdir -p $(STORE) $(MNT)
	@echo "imagefs: serving $(STORE) at $(MNT); in another shell: mkdir $(MNT)/images/NAME && cp FILE.vhd $(MNT)/images/NAME/image.vhd"
	@echo "imagefs: stop with Ctrl-C, or: umount $(MNT)"
	$(BIN) mount $(STORE) $(MNT)

vet:
	$(GO) vet ./...

unit:
	$(GO) test ./store/... ./xattr/... ./vhd/... ./fs/... ./cmd/...

integration:
	$(GO) test -count=1 -timeout 20m ./integration/...

test: vet
	$(GO) test -count=1 -timeout 20m ./...

race:
	$(GO) test -race -count=1 -timeout 30m ./...

# One package at a time: the suite's ratios need the machine to itself.
bench:
	@mkdir -p $(BENCH_OUT) $(IMAGEFS_BENCH_DIR)
	IMAGEFS_BENCH_DIR=$(IMAGEFS_BENCH_DIR) $(GO) test -run '^$$' -bench . -benchtime 1s -timeout 30m ./store/ 2>&1 | tee $(BENCH_OUT)/store.txt && grep -q '^ok' $(BENCH_OUT)/store.txt
	IMAGEFS_BENCH_DIR=$(IMAGEFS_BENCH_DIR) $(GO) test -v -count=1 -run '^TestBenchSuite$$' -bench . -benchtime 3x -timeout 40m ./integration/ \
		-args -bench-suite -bench-out $(abspath $(BENCH_OUT))/bench.md 2>&1 | tee $(BENCH_OUT)/integration.txt && grep -q '^ok' $(BENCH_OUT)/integration.txt
	@echo; cat $(BENCH_OUT)/bench.md

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzInspect -fuzztime $(FUZZTIME) ./vhd/

man: build
	sh docs/mkman.sh $(BIN) > docs/imagefs.1

install: build man
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/imagefs
	install -D -m 0644 docs/imagefs.1 $(DESTDIR)$(PREFIX)/share/man/man1/imagefs.1

clean:
	rm -f $(BIN)
