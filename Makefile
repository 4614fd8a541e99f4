# tsengine — every target creates .venv and installs what it needs when missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
DATA   ?= ./data

.DEFAULT_GOAL := help
.PHONY: help run test bench lint venv clean

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' Makefile | awk -F':.*## ' '{printf "  make %-6s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(PY) -m pip install -q -e '.[test,dev]'
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP) ## create .venv and install tsengine with test and dev extras

run: $(STAMP) ## start tsengine on embedded defaults with data in ./data
	$(VENV)/bin/tsengine run --data $(DATA)

test: $(STAMP) ## run the test suite (installs Prometheus, a real peer of the tests, when it can)
	@command -v promtool >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		prometheus >/dev/null 2>&1; } \
		|| echo "Prometheus is not installed (apt-get install prometheus): its peer tests will skip"
	$(PY) -m pytest -q

bench: $(STAMP) ## run the benchmarks and print the figures (see benchmarks/RESULTS.md)
	@command -v victoria-metrics >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && apt-get install -y -qq victoria-metrics >/dev/null 2>&1; } \
		|| echo "VictoriaMetrics is not installed (apt-get install victoria-metrics): measuring tsengine alone"
	$(PY) -m benchmarks.run

lint: $(STAMP) ## ruff check + format check, mypy
	$(VENV)/bin/ruff check tsengine server tests benchmarks
	$(VENV)/bin/ruff format --check tsengine server tests benchmarks
	$(VENV)/bin/mypy

clean: ## remove the virtualenv and caches (not ./data)
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis
