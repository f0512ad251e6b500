# Two commands for a new machine: `make run` (the whole stack, embedded) and `make test`.
# Both create the virtualenv from the pinned requirements on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Touched after a successful install; reinstalls only when the pins change.
INSTALLED := $(VENV)/.installed
AZURITE := tools/azurite/node_modules/.bin/azurite-blob

.PHONY: run test test-tools lint bench .venv clean

.venv: $(INSTALLED)

$(INSTALLED): requirements.txt constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
	touch $(INSTALLED)

# Embedded Redis, emulators, web, worker, bridge and Flower, then a sample workload; Ctrl-C stops.
run: $(INSTALLED)
	$(BIN)/python -m stack

# pytest exits 5 when it collected no test: a CI run that tested nothing is a failure here.
test: $(INSTALLED) test-tools
	$(BIN)/python -m pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: no tests were collected" >&2; fi; \
	exit $$status

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

lint: $(INSTALLED)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .data .pytest_cache
