# Two entry points for a fresh machine: `make demo` and `make test`.
# The virtual environment lives outside the clone, keyed by the dependency file, so CI and
# fresh clones reuse it; delete ~/.cache/corrmark/venvs to rebuild from scratch.
PYTHON ?= python3
# Keyed by the dependency lists only, so editing other project metadata does not rebuild a 5 GB venv.
DEPS_KEY := $(shell $(PYTHON) -c "import tomllib,hashlib,json;p=tomllib.load(open('pyproject.toml','rb'))['project'];print(hashlib.sha256(json.dumps([p['dependencies'],p['optional-dependencies']]).encode()).hexdigest()[:16])")
VENV ?= $(HOME)/.cache/corrmark/venvs/$(DEPS_KEY)
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast bench clean

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .

demo: venv
	$(VENV)/bin/corrmark demo --out demo-output

test: venv
	$(PY) -m pytest -q -ra

test-fast: venv
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf demo-output .pytest_cache
