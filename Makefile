# Build, lint and test modelseed.fleet. Every target installs what it needs on first use.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
DEV_REQUIREMENTS := requirements-dev.txt
VENV_STAMP := $(VENV)/.installed

BUILD := $(CURDIR)/.build
COLLECTION_LINK := $(BUILD)/ansible_collections/modelseed/fleet
SANITY_TREE := $(BUILD)/sanity/ansible_collections/modelseed/fleet
DIST := $(BUILD)/dist

# ansible-test always bootstraps pip with get-pip.py, which it downloads unless the cache has it.
# The version is the one ansible-test of ansible-core 2.19 pins.
ANSIBLE_TEST_PIP := 24.2
GET_PIP := $(HOME)/.ansible/test/cache/get_pip_$(subst .,_,$(ANSIBLE_TEST_PIP)).py
SANITY_PYTHON ?= $(shell $(BIN)/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')

PYTEST_ARGS ?=
# pytest-xdist workers for the integration tests (0: one process); each xdist_group stays on one worker. More workers
# than cores: the tests wait on sshd, throttled transfers and timeouts much of the time.
PYTEST_WORKERS ?= 4
# molecule scenarios to run; empty: every one under molecule/
SCENARIOS ?=
# molecule scenarios run at a time, the longest of the last run first (tools/molecule_test.sh): they wait on sshd,
# rate-limited swarms and polls, so two at a time end sooner than one after another
MOLECULE_JOBS ?= 2

# The oldest ansible-core that meta/runtime.yml claims, in a virtualenv of its own (requirements-compat.txt):
# make compat runs the unit tests and one molecule scenario, the one with the fewest nodes, on it.
COMPAT_REQUIREMENTS := requirements-compat.txt
COMPAT_VENV := $(BUILD)/compat/venv
COMPAT_STAMP := $(COMPAT_VENV)/.installed
COMPAT_SCENARIO ?= golden_image

export PATH := $(BIN):$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(BUILD)

.PHONY: help sysdeps venv collection sanity lint units integration molecule compat side-by-side test demo bench stress build clean

help:
	@echo "make demo         run the demo"
	@echo "make test         sysdeps, venv, sanity, lint, build, units, then integration with molecule and compat beside it"
	@echo "make sysdeps      install missing Debian/Ubuntu packages (as root)"
	@echo "make venv         create .venv with the pinned tools from $(DEV_REQUIREMENTS)"
	@echo "make sanity       ansible-test sanity"
	@echo "make lint         ansible-lint (production profile), ruff, and the module_utils layers (import-linter)"
	@echo "make units        pytest tests/unit"
	@echo "make integration  pytest tests/integration, on PYTEST_WORKERS pytest-xdist workers ($(PYTEST_WORKERS))"
	@echo "make molecule     molecule test of every scenario on the sshd fleet (SCENARIOS=\"default pull\" for some, MOLECULE_JOBS at a time)"
	@echo "make compat       unit tests and the $(COMPAT_SCENARIO) scenario on the oldest ansible-core claimed ($(COMPAT_REQUIREMENTS))"
	@echo "make side-by-side integration, with molecule and then compat running beside it (their output: $(BUILD)/beside.log)"
	@echo "make bench        benchmarks"
	@echo "make stress       stress tests"
	@echo "make build        build the collection tarball into $(DIST) and check it installs offline"
	@echo "make clean        remove .venv, .build and test outputs"

sysdeps:
	@tools/sysdeps.sh

venv: $(VENV_STAMP)

$(VENV_STAMP): $(DEV_REQUIREMENTS) | sysdeps
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11 or newer is needed, $(PYTHON) is " + sys.version.split()[0])'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r $(DEV_REQUIREMENTS)
	touch $@

# The collection as ansible_collections/modelseed/fleet, for ANSIBLE_COLLECTIONS_PATH and imports in tests.
collection: $(COLLECTION_LINK)

$(COLLECTION_LINK):
	mkdir -p $(@D)
	ln -sfn ../../.. $@

$(GET_PIP): tools/get_pip_standin.py
	install -D -m 0644 $< $@

# ansible-test resolves symlinks in the working directory, so it runs on a copy of the files git knows
# about. The copy is a repository of its own: inside this one (which ignores .build) it would look empty.
sanity: venv $(GET_PIP)
	rm -rf $(SANITY_TREE)
	mkdir -p $(SANITY_TREE)
	git ls-files -z --cached --others --exclude-standard \
		| rsync -a --from0 --files-from=- --ignore-missing-args ./ $(SANITY_TREE)/
	git -C $(SANITY_TREE) init --quiet
	cd $(SANITY_TREE) && ansible-test sanity --venv --python $(SANITY_PYTHON) --color no

lint: venv collection
	ansible-lint
	ruff check .
	PYTHONPATH=$(BUILD) lint-imports --no-cache

units: venv collection
	pytest tests/unit $(PYTEST_ARGS)

# Every test's seconds of half a second or more, not only the 30 slowest: what each test costs is read from this list.
integration: venv collection
	pytest tests/integration -n $(PYTEST_WORKERS) --dist loadgroup --no-loadscope-reorder --durations=0 --durations-min=0.5 $(PYTEST_ARGS)

# Logs in $(BUILD)/molecule/<scenario>.log; a failure prints the failed step and its task errors.
molecule: venv collection
	MOLECULE_LOGS=$(BUILD)/molecule MOLECULE_JOBS=$(MOLECULE_JOBS) tools/molecule_test.sh $(SCENARIOS)

$(COMPAT_STAMP): $(COMPAT_REQUIREMENTS) | sysdeps
	test -x $(COMPAT_VENV)/bin/python || $(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r $(COMPAT_REQUIREMENTS)
	touch $@

# The compat virtualenv first on the PATH: its pytest, molecule and ansible-playbook run.
compat: $(COMPAT_STAMP) collection
	PATH=$(COMPAT_VENV)/bin:$$PATH pytest tests/unit $(PYTEST_ARGS)
	PATH=$(COMPAT_VENV)/bin:$$PATH MOLECULE_LOGS=$(BUILD)/molecule-compat tools/molecule_test.sh $(COMPAT_SCENARIO)

# Integration in the foreground, molecule and then compat beside it: they share no address, port or file (each fleet
# claims its addresses machine-wide, hubs listen on free ports, molecule logs to files), and they use the cores while
# the tests wait on timeouts, throttled transfers and the fleet's sshd. Fails when either side does. The compat
# virtualenv is made on that side too, when compat starts, not before the integration tests.
side-by-side: venv collection
	tools/beside.sh $(BUILD)/beside.log "$(MAKE) --no-print-directory molecule" "$(MAKE) --no-print-directory compat" \
		-- $(MAKE) --no-print-directory integration

# The quick checks first, two at a time (each one's output in one piece), then the rest side by side.
test: sysdeps venv
	$(MAKE) --no-print-directory -j2 --output-sync=target sanity lint build units
	$(MAKE) --no-print-directory side-by-side

demo: venv collection
	python tools/demo.py

bench: venv collection
	python tools/bench

stress: venv collection
	python tools/stress.py

build: venv
	rm -rf $(DIST)
	ansible-galaxy collection build --output-path $(DIST) .
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT \
		&& ANSIBLE_COLLECTIONS_PATH="$$tmp" ansible-galaxy collection install --offline -p "$$tmp" $(DIST)/modelseed-fleet-*.tar.gz \
		&& test -f "$$tmp/ansible_collections/modelseed/fleet/MANIFEST.json" \
		&& for module in $$(ls plugins/modules/*.py | xargs -n1 basename | sed 's/\.py$$//'); do \
			ANSIBLE_COLLECTIONS_PATH="$$tmp" ansible-doc modelseed.fleet.$$module > /dev/null || exit 1; done

clean:
	rm -rf $(VENV) $(BUILD) tests/output .pytest_cache .ruff_cache
