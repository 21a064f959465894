# Lifeboat — README's two commands are `make demo` and `make test`.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
PYTEST := $(PY) scripts/run_pytest.py
# Lab kind of lab-up/down/status/env: process (default) or compose (`make lab-up LAB_KIND=compose`)
export LAB_KIND

.PHONY: setup lab-up lab-down lab-status lab-env demo test lint unit integration sanity drills drills-full test-slow bench build clean

setup:
	@bash scripts/setup.sh

lab-up: setup
	@$(PY) -m lab up

lab-down:
	@$(PY) -m lab down

lab-status:
	@$(PY) -m lab status

lab-env:
	@$(PY) -m lab env

demo: setup
	@bash scripts/demo.sh

lint: setup
	$(VENV)/bin/ruff check .

unit: setup
	$(PYTEST) tests/unit --html=reports/unit-report.html --self-contained-html

integration: lab-up
	$(PYTEST) tests/integration --html=reports/integration-report.html --self-contained-html

sanity: setup
	@bash scripts/sanity.sh

drills: lab-up
	$(PYTEST) dr_tests -m quick --html=reports/dr-report.html --self-contained-html

drills-full: lab-up
	$(PYTEST) dr_tests -m full --html=reports/dr-report.html --self-contained-html

test: setup
	$(VENV)/bin/ruff check .
	@$(PY) -m lab up
	$(PYTEST) tests -m "not slow" --durations=25 --html=reports/test-report.html --self-contained-html
	@bash scripts/sanity.sh
	@if ls dr_tests/test_*.py >/dev/null 2>&1; then $(PYTEST) dr_tests -m quick --html=reports/dr-report.html --self-contained-html; fi

# The tests marked slow (whole extra drills inside tests): not in `make test`'s 35-minute budget.
test-slow: lab-up
	$(PYTEST) tests -m slow --durations=25 --html=reports/test-slow-report.html --self-contained-html

bench: lab-up
	@bash scripts/bench-peers.sh
	$(PY) -m bench.run_all

build: setup
	$(VENV)/bin/ansible-galaxy collection build --force --output-path .build/

clean: lab-down
	rm -rf .build reports
