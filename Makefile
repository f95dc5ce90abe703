# Tessera: `make demo` and `make test` on a fresh Debian machine do all the set-up.
#
#   make demo    build, convert the committed digits model, inspect, verify, export, compare
#   make test    every test: Swift (format, CLI) and Python oracles (onnx, onnxruntime)
#   make bench   the benchmark harness (Tessera next to its peers, one run)
#
# Each target installs the Debian packages it needs when they are missing, and the Python
# virtual environment (.venv, pinned by requirements.txt) when it needs Python.

SHELL := /bin/bash
SWIFT ?= $(or $(shell command -v swift 2>/dev/null),/opt/swift/usr/bin/swift)
PYTHON ?= python3
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
DEB_PACKAGES := pkg-config libzstd-dev libxxhash-dev libprotobuf-c-dev zstd
VENV := .venv
RELEASE := .build/release
DEMO := .build/demo

.PHONY: all deps venv build test demo bench clean

all: build

# Install the Debian packages that are missing (apt-get update only when something is).
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if ! $(PYTHON) -m venv --help >/dev/null 2>&1; then missing="$$missing python3-venv"; fi; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

# The Python test oracles, reinstalled when requirements.txt changes.
venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt | deps
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

build: deps
	$(SWIFT) build -c release

test: deps venv
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build
	TESSERA=.build/debug/tessera $(VENV)/bin/python -m pytest -q -p no:cacheprovider Tests/python

demo: build venv
	@mkdir -p $(DEMO)
	$(RELEASE)/tessera convert fixtures/onnx/digits_mlp.onnx -o $(DEMO)/digits.tess --force
	$(RELEASE)/tessera inspect $(DEMO)/digits.tess
	$(RELEASE)/tessera verify $(DEMO)/digits.tess
	$(RELEASE)/tessera export $(DEMO)/digits.tess -o $(DEMO)/digits.onnx --force
	$(VENV)/bin/python fixtures/show_roundtrip.py fixtures/onnx/digits_mlp.onnx $(DEMO)/digits.onnx

bench: build
	$(RELEASE)/tessera-bench format

clean:
	rm -rf .build $(VENV)
