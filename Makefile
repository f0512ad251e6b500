# Two commands for a new machine: `make run` (the whole stack, embedded) and `make test`.
# Both create the virtualenv from the pinned requirements on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Touched after a successful install; reinstalls only when the pins change.
INSTALLED := $(VENV)/.installed

.PHONY: run test lint bench .venv clean

.venv: $(INSTALLED)

$(INSTALLED): requirements.txt constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
	touch $(INSTALLED)

run: $(INSTALLED)
	$(BIN)/python -m honcho start -f Procfile

# pytest exits 5 when it collected no test: a CI run that tested nothing is a failure here.
test: $(INSTALLED)
	$(BIN)/python -m pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: no tests were collected" >&2; fi; \
	exit $$status

lint: $(INSTALLED)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .data .pytest_cache
