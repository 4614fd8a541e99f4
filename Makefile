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

# Real peers of the tests and benchmarks, from Debian packages, installed when missing and root.
define apt_install
	@missing=""; for pair in $(1); do cmd=$${pair%%:*}; pkg=$${pair##*:}; \
		command -v $$cmd >/dev/null || missing="$$missing $$pkg"; done; \
	[ -z "$$missing" ] || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends $$missing >/dev/null 2>&1; } \
		|| echo "not installed (apt-get install$$missing): the tests that need them will skip"
endef

test: $(STAMP) ## run the test suite (installs Prometheus and Alertmanager, real peers of the tests)
	$(call apt_install,promtool:prometheus prometheus-alertmanager:prometheus-alertmanager)
	$(PY) -m pytest -q

bench: $(STAMP) ## run the benchmarks and print the figures (see benchmarks/RESULTS.md)
	$(call apt_install,victoria-metrics:victoria-metrics wrk:wrk)
	$(PY) -m benchmarks.run

lint: $(STAMP) ## ruff check + format check, mypy
	$(VENV)/bin/ruff check tsengine server tests benchmarks
	$(VENV)/bin/ruff format --check tsengine server tests benchmarks
	$(VENV)/bin/mypy

clean: ## remove the virtualenv and caches (not ./data)
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis
