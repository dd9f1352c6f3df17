# sea-minimal: `make book` executes the notebooks and builds the book, `make test` runs every test.
# Both create the virtual environment first (once; again only when pyproject.toml changes).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# torch is installed first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH  := torch==2.13.0

.PHONY: venv book test lab data chromium clean distclean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(TORCH)
	$(PY) -m pip install -e ".[book,test,cluster,gemma]" $(TORCH)
	$(PY) -m ipykernel install --sys-prefix --name python3
	touch $@

book: $(STAMP)
	$(PY) scripts/execute_notebooks.py
	$(VENV)/bin/jupyter-book build -W -n --keep-going --all .

test: $(STAMP)
	$(PY) -m pytest tests

# The notebooks in JupyterLab, on the kernel `make venv` registers (python3 of .venv). Prints the URL with its token.
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=$(CURDIR) $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) notebooks

# Downloads the data sets into $SEA_DATA_DIR (else ../shared/data), each checked against its pinned sha256; files
# already there are kept. Reports what it could not fetch (offline, say) without failing: see README "Get the data".
data: $(STAMP)
	$(PY) -m sea_minimal data fetch --best-effort

# Headless Chromium for the rendered-book test (tests/test_book.py skips it without one): Debian's package, as root.
chromium:
	command -v chromium >/dev/null 2>&1 || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }

clean:
	rm -rf _build .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# also removes the virtual environment (the next `make` recreates it, ~3 min)
distclean: clean
	rm -rf $(VENV)
