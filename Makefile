# Quick start: `make run` renders the default example, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
PYTEST_STAMP := $(VENV)/.installed-pytest
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test test-fast install install-test bench bench-quality mini-models docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch/torchvision are pinned here for a fast, reproducible set-up; pyproject.toml keeps ranges.
$(STAMP): $(PY) pyproject.toml
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e .
	touch $@

# Browser tests drive Debian's Chromium through Playwright (no browser download by Playwright).
CHROMIUM := /usr/bin/chromium

$(CHROMIUM):
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium

$(PYTEST_STAMP): $(STAMP)
	$(PIP) install -q -e '.[test,ray]'
	touch $@

$(TEST_STAMP): $(PYTEST_STAMP) | $(CHROMIUM)
	touch $@

install: $(STAMP)
install-test: $(TEST_STAMP)

# The first image: the shipped mini CLIP draws a prompt of its world, offline, in well under a minute.
run: $(STAMP)
	$(VENV)/bin/clipig examples/first-image.yaml -o out/first-image.png -v
	@echo "With the real CLIP (downloads ViT-B/32 once, then renders on this machine):"
	@echo "  $(VENV)/bin/clipig examples/05-curly-handle.yaml -o out/"

# One worker per usable core (tests/conftest.py counts them); the slowest tests are named at the end, so a
# slow machine shows where its time went.
XDIST := -n auto --dist worksteal
test: $(TEST_STAMP)
	$(PY) -m pytest $(XDIST) --durations=15

# The edit-run loop: every test but the slow ones and those that drive a browser, in under two minutes.
test-fast: $(PYTEST_STAMP)
	$(PY) -m pytest $(XDIST) -m "not slow and not browser"

bench: $(STAMP)
	$(PY) -m clipig.bench

# Pictures of `mini` judged by `mini-referee` (docs/benchmarks.md, "Quality").
bench-quality: $(STAMP)
	$(PY) -m clipig.bench --quality

# The shipped mini CLIPs trained again by their documented commands (docs/mini.md), into out/mini/:
# about 27 minutes for `mini`, `mini-2` or `mini-3` and 13 for `mini-referee` on two cores.
MINI := $(PY) -m clipig.mini.train --batch 128 --threads 2
HARD := --steps 900 --lr 1e-3 --adversarial 1 --adversarial-steps 1 --fooled 32 --fool-steps 4 --fool-size 128

mini-models: out/mini/mini.pt out/mini/mini-2.pt out/mini/mini-3.pt out/mini/mini-referee.pt

out/mini/mini-drawn.pt: | $(STAMP)
	$(MINI) --seed 1 --steps 2000 --lr 2e-3 -o $@
out/mini/mini.pt: out/mini/mini-drawn.pt
	$(MINI) --init $< --seed 301 $(HARD) -o $@
out/mini/mini-2-drawn.pt: | $(STAMP)
	$(MINI) --seed 3 --steps 2000 --lr 2e-3 -o $@
out/mini/mini-2.pt: out/mini/mini-2-drawn.pt
	$(MINI) --init $< --seed 303 $(HARD) -o $@
out/mini/mini-3-drawn.pt: | $(STAMP)
	$(MINI) --seed 5 --steps 2000 --lr 2e-3 -o $@
out/mini/mini-3.pt: out/mini/mini-3-drawn.pt
	$(MINI) --init $< --seed 305 $(HARD) -o $@
out/mini/mini-referee.pt: | $(STAMP)
	$(MINI) --seed 2 --steps 2000 --lr 2e-3 -o $@

docs: $(STAMP)
	$(VENV)/bin/clipig docs -o docs/

clean:
	rm -rf $(VENV) out
