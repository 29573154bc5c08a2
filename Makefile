# Two entry points for a fresh machine: `make demo` and `make test`.
# The virtual environment lives outside the clone, keyed by the dependency file, so CI and
# fresh clones reuse it; delete ~/.cache/corrmark/venvs to rebuild from scratch.
PYTHON ?= python3
# Keyed by the dependency lists only, so editing other project metadata does not rebuild a 5 GB venv.
DEPS_KEY := $(shell $(PYTHON) -c "import tomllib,hashlib,json;p=tomllib.load(open('pyproject.toml','rb'))['project'];print(hashlib.sha256(json.dumps([p['dependencies'],p['optional-dependencies']]).encode()).hexdigest()[:16])")
VENV ?= $(HOME)/.cache/corrmark/venvs/$(DEPS_KEY)
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv browser demo test test-fast clean

# The venv holds the dependencies only, never this clone: several clones share it, and each runs its own src/ (so
# `make demo` in one clone cannot change what `corrmark` means in another).
RUN := PYTHONPATH=$(CURDIR)/src $(PY)

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
	print('\n'.join(p['dependencies'] + p['optional-dependencies']['test']))" > $(VENV)/requirements.txt
	$(PY) -m pip install --quiet -r $(VENV)/requirements.txt
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(RUN) -m corrmark demo --out demo-output

# tests/test_report_browser.py renders the demo report in headless Chromium: install Debian's chromium when it is
# missing (root, or sudo without a password). Not fatal here: without a browser that test fails with a clear message,
# unless CORRMARK_SKIP_BROWSER_TEST=1.
browser:
	@if [ "$$CORRMARK_SKIP_BROWSER_TEST" = 1 ] || command -v chromium >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; \
	else echo "warning: chromium is missing and cannot be installed without root or sudo"; exit 0; fi; \
	echo "installing chromium (for tests/test_report_browser.py)"; \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || \
	echo "warning: installing chromium failed; the browser test will fail"

test: venv browser
	$(RUN) -m pytest -q -ra

test-fast: venv browser
	$(RUN) -m pytest -q -m "not slow"

clean:
	rm -rf demo-output .pytest_cache
