# peergrid: two commands do all the set-up on a fresh machine with Python >= 3.11.
#   make demo   create .venv, install, simulate the default scenario (rule vs no P2P)
#   make test   create .venv, install with the test and cluster (Ray) extras and
#               Debian's chromium (the live view's browser test), run the test suite
#   make bench  also install the reference solvers, run the benchmarks in bench/
#               (power flow, per-phase vs balanced feeder, optima, training speed, deployment)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PIP     = $(BIN)/python -m pip
STAMP   = $(VENV)/.installed
DAYS   ?= 7
# Debian's chromium drives the live view's browser test (playwright, no download)
CHROMIUM ?= /usr/bin/chromium
SUDO    ?= $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-slow bench install browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python setup.cfg constraints.txt pyproject.toml
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e '.[test,cluster]'
	touch $(STAMP)

install: $(STAMP)

$(CHROMIUM):
	$(SUDO) apt-get install -y -q --no-install-recommends chromium > /dev/null \
	  || ($(SUDO) apt-get update -q > /dev/null \
	      && $(SUDO) apt-get install -y -q --no-install-recommends chromium > /dev/null)

browser: $(CHROMIUM)

demo: $(STAMP)
	mkdir -p runs
	$(BIN)/peergrid simulate --scenario ieee13 --policy nop2p --days $(DAYS) --out runs/demo-nop2p --force --quiet > /dev/null
	$(BIN)/peergrid simulate --scenario ieee13 --policy rule --days $(DAYS) --out runs/demo-rule --force
	$(BIN)/peergrid logs plot runs/demo-rule > /dev/null
	$(BIN)/peergrid logs plot runs/demo-nop2p > /dev/null
	@echo
	@$(BIN)/python -c "import json; a=json.load(open('runs/demo-nop2p/summary.json'))['community']; b=json.load(open('runs/demo-rule/summary.json'))['community']; print(f\"community cost over $(DAYS) days: no P2P {a['cost']:,.2f}  rule {b['cost']:,.2f}  (saving {1-b['cost']/a['cost']:.1%})\")"
	@echo "logs, summaries and figures: runs/demo-rule/ and runs/demo-nop2p/"

test: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(PIP) install --quiet -c constraints.txt -e '.[bench]'
	$(BIN)/python bench/powerflow.py
	$(BIN)/python bench/feeder_models.py
	$(BIN)/python bench/optimum.py
	$(BIN)/python bench/training.py
	$(BIN)/python bench/deploy.py
	$(BIN)/python bench/simulate.py

clean:
	rm -rf $(VENV) runs *.egg-info
