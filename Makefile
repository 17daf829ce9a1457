# gatelab — set-up, tests and the demo. `make demo` is the main job, `make test` the whole suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN ?= runs/demo

.PHONY: install test test-fast demo bench browser clean

install: $(STAMP)

# Idempotent: re-runs pip only when the project or its pins change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

# Debian's chromium, for the headless-browser test of the gate report (root, apt).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "warning: could not install chromium; browser tests will be skipped"; }

test: install browser
	$(BIN)/python -m pytest -n 2 -q

test-fast: install
	$(BIN)/python -m pytest -n 2 -q -m "not slow and not browser"

demo: install
	$(BIN)/gatelab demo --out $(RUN)

bench: install
	$(BIN)/gatelab bench

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis src/*.egg-info
