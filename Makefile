# libdevrig: build, test, demo, install.
#
#   make demo      build and run the C demo (a flaky service, supervised)
#   make test      every test of every language (what CI runs)
#   make bench     benchmarks against baselines (writes BENCHMARKS.md, bench/plots)
#   make install PREFIX=/usr/local

CARGO   ?= cargo
CC      ?= cc
PREFIX  ?= /usr/local
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
MAJOR   := $(firstword $(subst ., ,$(VERSION)))

ROOT    := $(CURDIR)
LIBDIR  := $(ROOT)/target/release
BUILD   := $(ROOT)/build
PCDIR   := $(BUILD)/pkgconfig
CFLAGS_STRICT := -std=c11 -Wall -Wextra -Werror -O1 -g

export PKG_CONFIG_PATH := $(PCDIR):$(PKG_CONFIG_PATH)

.PHONY: all build header check-header check-deps test-install demo test test-rust test-c test-python \
        test-go bench fuzz soak install clean

all: build

# The library (.so with soname libdevrig.so.$(MAJOR), and .a) plus an
# uninstalled devrig.pc pointing into this tree, and the soname link
# libdevrig.so.$(MAJOR) -> libdevrig.so (build.rs makes it too, so that a
# plain `cargo build` gives the same).
build:
	$(CARGO) build --release --lib
	@mkdir -p $(PCDIR)
	@sed -e 's|@PREFIX@|$(ROOT)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
	     -e 's|@INCLUDEDIR@|$(ROOT)/include|' -e 's|@VERSION@|$(VERSION)|' \
	     devrig.pc.in > $(PCDIR)/devrig.pc
	@ln -sf libdevrig.so $(LIBDIR)/libdevrig.so.$(MAJOR)

# Regenerates include/devrig.h from src/ffi.rs.
header:
	DEVRIG_HEADER_OUT=$(ROOT)/include/devrig.h $(CARGO) build --release --lib

# Fails when the committed header differs from what the source generates.
check-header:
	@mkdir -p $(BUILD)
	DEVRIG_HEADER_OUT=$(BUILD)/devrig.h.generated $(CARGO) build --release --lib
	@cmp -s $(BUILD)/devrig.h.generated include/devrig.h || { \
	  echo "include/devrig.h is stale: run 'make header' and commit it"; \
	  diff -u include/devrig.h $(BUILD)/devrig.h.generated | head -40; exit 1; }
	@echo "include/devrig.h is up to date"

demo: build
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS_STRICT) -Iinclude examples/demo.c -o $(BUILD)/demo \
	  -L$(LIBDIR) -ldevrig -Wl,-rpath,$(LIBDIR)
	$(BUILD)/demo

# tokio's `process`/`signal` features would install a SIGCHLD handler in the
# host (fatal to Go hosts): nothing may pull signal-hook-registry in.
check-deps:
	@if $(CARGO) tree -e normal -p devrig 2>/dev/null | grep -q signal-hook; then \
	  echo "a dependency pulls in signal-hook-registry"; exit 1; fi
	@echo "no signal-handling dependency"

# Installs into a staging prefix and builds a program against it through
# pkg-config, dynamically and statically.
test-install: build
	rm -rf $(BUILD)/stage
	$(MAKE) install PREFIX=$(BUILD)/stage >/dev/null
	PKG_CONFIG_PATH=$(BUILD)/stage/lib/pkgconfig $(CC) $(CFLAGS_STRICT) tests/install/smoke.c \
	  -o $(BUILD)/smoke-dynamic $$(PKG_CONFIG_PATH=$(BUILD)/stage/lib/pkgconfig pkg-config --cflags --libs devrig) \
	  -Wl,-rpath,$(BUILD)/stage/lib
	$(BUILD)/smoke-dynamic
	$(CC) $(CFLAGS_STRICT) tests/install/smoke.c -o $(BUILD)/smoke-static \
	  $$(PKG_CONFIG_PATH=$(BUILD)/stage/lib/pkgconfig pkg-config --cflags devrig) \
	  $(BUILD)/stage/lib/libdevrig.a $$(PKG_CONFIG_PATH=$(BUILD)/stage/lib/pkgconfig pkg-config --libs-only-l --static devrig | sed 's/-ldevrig//')
	$(BUILD)/smoke-static
	@if ldd $(BUILD)/smoke-static | grep -q libdevrig; then echo "static binary links libdevrig.so"; exit 1; fi
	@readelf -d $(BUILD)/stage/lib/libdevrig.so.$(VERSION) | grep -q 'SONAME.*libdevrig.so.$(MAJOR)'

test: check-header check-deps build test-rust test-install test-c test-python test-go
	@echo "all test suites passed"

# The pure core's unit tests run once more in a debug build, where
# debug assertions and integer overflow checks are on.
test-rust:
	$(CARGO) test --release
	$(CARGO) test --lib

test-c: build
	$(MAKE) --no-print-directory -C tests/c test

test-python: build
	$(MAKE) --no-print-directory -C bindings/python test

test-go: build
	$(MAKE) --no-print-directory -C bindings/go test

bench: build
	$(MAKE) --no-print-directory -C bench all

fuzz:
	$(MAKE) --no-print-directory -C tests/fuzz long

soak: build
	$(MAKE) --no-print-directory -C tests/soak soak
	$(MAKE) --no-print-directory -C tests/c soak

install: build
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 0755 $(LIBDIR)/libdevrig.so $(DESTDIR)$(PREFIX)/lib/libdevrig.so.$(VERSION)
	ln -sf libdevrig.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libdevrig.so.$(MAJOR)
	ln -sf libdevrig.so.$(MAJOR) $(DESTDIR)$(PREFIX)/lib/libdevrig.so
	install -m 0644 $(LIBDIR)/libdevrig.a $(DESTDIR)$(PREFIX)/lib/libdevrig.a
	install -m 0644 include/devrig.h $(DESTDIR)$(PREFIX)/include/devrig.h
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$${prefix}/lib|' \
	    -e 's|@INCLUDEDIR@|$${prefix}/include|' -e 's|@VERSION@|$(VERSION)|' \
	    devrig.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/devrig.pc

clean:
	$(CARGO) clean
	rm -rf $(BUILD)
