# Two commands for a new machine: `make run` (the whole stack, embedded) and `make test`.
# Both create the virtualenv from the pinned requirements on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Stamps touched after a successful install; each reinstalls only when its pins change. `make run`
# needs the runtime set only; `make test` adds the test and check tools on top.
INSTALLED := $(VENV)/.installed
TEST_INSTALLED := $(VENV)/.installed-test
PIP := $(BIN)/python -m pip --disable-pip-version-check
AZURITE := tools/azurite/node_modules/.bin/azurite-blob

.PHONY: run test checks test-tools lint bench .venv clean

.venv: $(INSTALLED)

# Runtime dependencies (exact pins), then Conduit itself, editable: `import worker` and the
# conduit-* commands work from any directory with this venv's python. Not --quiet: the first
# install fetches several hundred MB, and pip's "Collecting ..." lines are its progress.
$(INSTALLED): requirements.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "make: installing Conduit's runtime dependencies into $(VENV) (the first time takes minutes)"
	$(PIP) install --upgrade pip
	$(PIP) install -r requirements.txt -c constraints.txt
	$(PIP) install --no-deps --editable .
	touch $(INSTALLED)

$(TEST_INSTALLED): $(INSTALLED) requirements-test.txt requirements-dev.txt
	@echo "make: installing the test and check tools into $(VENV)"
	$(PIP) install -r requirements-test.txt -r requirements-dev.txt -c constraints.txt
	touch $(TEST_INSTALLED)

# Embedded Redis, emulators, web, worker, bridge and Flower, then a sample workload; Ctrl-C stops.
# RUN_ARGS passes options: --no-consume (results stay on the queues), --no-workload, --help.
RUN_ARGS ?=
run: $(INSTALLED)
	$(BIN)/python -m stack $(RUN_ARGS)

# pytest exits 5 when it collected no test: a CI run that tested nothing is a failure here.
# Two test files at a time (pytest-xdist, one file per worker so a module's servers stay shared):
# the suite is mostly waiting on real servers and processes, which overlaps well on two cores.
PYTEST_WORKERS ?= 2
test: $(TEST_INSTALLED) test-tools checks
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile; status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: no tests were collected" >&2; fi; \
	exit $$status

# Static checks that run before the tests and stop them at the first failure, naming it: lint,
# formatting, the layering contracts (pyproject.toml's [tool.importlinter]) and types (mypy's
# `files`, zero errors). Fast ones first. `make checks` runs them alone.
CHECKS := \
	"ruff check|$(BIN)/ruff check ." \
	"ruff format --check|$(BIN)/ruff format --check ." \
	"lint-imports|$(BIN)/lint-imports" \
	"mypy|$(BIN)/mypy"

checks: $(TEST_INSTALLED)
	@for check in $(CHECKS); do \
		name=$${check%%|*}; command=$${check#*|}; \
		echo "make checks: $$name"; \
		$$command || { echo "make checks: $$name failed; fix it (see above) before the tests run" >&2; exit 1; }; \
	done

# The dashboard's browser test needs Debian's Chromium and ChromeDriver, the compose test a compose
# client. Installed once when missing (needs root, as CI has); later runs skip this. The blob tests
# need Azurite, installed from tools/azurite's lockfile when npm is there (without npm they skip
# on a laptop and fail on CI).
test-tools:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		$(call apt_install,chromium chromium-driver)
	@docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null || \
		$(call apt_install,--no-install-recommends docker-compose)
	@test -x $(AZURITE) || ! command -v npm >/dev/null || \
		(cd tools/azurite && npm ci --no-audit --no-fund --loglevel=error)

# Root (as in CI) installs directly, a developer with passwordless sudo through sudo; anyone else
# is told what is missing, and the tests that need it fail saying so.
APT_GET := $(shell [ "$$(id -u)" = 0 ] && echo apt-get || (sudo -n true 2>/dev/null && echo "sudo apt-get"))
define apt_install
	( [ -n "$(APT_GET)" ] && $(APT_GET) update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -qq $(1) ) || \
	echo "make test: could not install $(1) (needs root or sudo)" >&2
endef

lint: $(TEST_INSTALLED)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .data .pytest_cache
