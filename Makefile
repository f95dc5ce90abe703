# Tessera: `make demo` and `make test` on a fresh Debian machine do all the set-up.
#
#   make demo    build, generate a model, inspect / pack / verify / unpack it
#   make test    every test (unit, invalid-file, robustness, CLI)
#   make bench   the benchmark harness (Tessera next to its peers, one run)
#
# Each target installs the Debian packages it needs when they are missing.

SHELL := /bin/bash
SWIFT ?= $(or $(shell command -v swift 2>/dev/null),/opt/swift/usr/bin/swift)
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
DEB_PACKAGES := pkg-config libzstd-dev libxxhash-dev zstd
RELEASE := .build/release
DEMO := .build/demo

.PHONY: all deps build test demo bench clean

all: build

# Install the Debian packages that are missing (apt-get update only when something is).
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

build: deps
	$(SWIFT) build -c release

test: deps
	$(SWIFT) test

demo: build
	@mkdir -p $(DEMO)
	@echo "== No ONNX importer yet: the demo uses a generated model with every layout (tessera-bench synthesize)."
	$(RELEASE)/tessera-bench synthesize $(DEMO)/model.tess --force
	$(RELEASE)/tessera inspect $(DEMO)/model.tess
	$(RELEASE)/tessera pack $(DEMO)/model.tess -o $(DEMO)/model.packed.tess --force
	$(RELEASE)/tessera inspect $(DEMO)/model.packed.tess
	$(RELEASE)/tessera verify $(DEMO)/model.packed.tess
	$(RELEASE)/tessera unpack $(DEMO)/model.packed.tess -o $(DEMO)/model.unpacked.tess --force
	cmp $(DEMO)/model.tess $(DEMO)/model.unpacked.tess && echo "pack -> unpack restored the original bytes"

bench: build
	$(RELEASE)/tessera-bench format

clean:
	rm -rf .build
