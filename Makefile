# Quick start: `make run` runs the Fur/Skive pilot, `make test` runs the linters, then the tests. Both create .venv
# first.
# PYTHON may point at any Python >= 3.12; by default the first of python3.13, python3.12, python3 that is.
VENV    := .venv
BIN     := $(VENV)/bin
PYTHON  ?= $(shell for p in python3.13 python3.12 python3; do \
             command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null \
             && { echo $$p; break; }; done)
SCENARIO ?= scenarios/fur_skive.yaml
PYTEST_ARGS ?=

.PHONY: install run test lint bench compare clean

$(BIN)/s4g: pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python >= 3.12 not found (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $@

install: $(BIN)/s4g

run: install
	$(BIN)/s4g run $(SCENARIO)

# the linters first: a lint or type error fails `make test` as a failing test does
test: install lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# ruff (lint rules only, no reformatting) and mypy (strict on devices/ and cosim/); both run, either failing fails.
$(BIN)/ruff: pyproject.toml | $(BIN)/s4g
	$(BIN)/python -m pip install --quiet -e ".[test,lint]"
	@touch $@

lint: $(BIN)/ruff
	@status=0; $(BIN)/ruff check . || status=1; $(BIN)/mypy || status=1; exit $$status

bench: install
	$(BIN)/python -m benchmarks

# The Fur/Skive comparison in the README: every variant over the summer week (the S4G controllers, then the
# voltage levers alone and combined, on causal forecasts; combined_oracle is the perfect-foresight upper bound),
# table written into README.md. About 5 min per variant on a quiet 2-core machine.
COMPARE_VARIANTS ?= baseline rule_based profess profess_gesscon full pv_limit pv_volt_watt libal_voltage \
                    gesscon_voltage combined combined_oracle er_residential
compare: install
	$(BIN)/s4g run scenarios/fur_skive.yaml --variant all --until 7d --out runs/fur_skive-week --no-report
	$(BIN)/s4g compare $(addprefix runs/fur_skive-week/,$(COMPARE_VARIANTS)) \
	  --readme README.md --plot docs/img/fur_skive_comparison.png

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
