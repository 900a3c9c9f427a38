# The project's commands. `make up` and `make test` are the two a newcomer needs (README.md).
# Every target that touches the lab takes the lab lock (/run/edge-lab.lock) itself unless its
# caller already holds it (`flock /run/edge-lab.lock make ...`); see nat/lab/lib.sh.
#
#   make up       install what is missing, build, bring the lab up, wait until it answers
#   make down     tear the lab down, leaving nothing behind (logs stay in .lab/logs)
#   make status   each host, its services, one line of reachability
#   make test     install, build, then every suite in TEST_SUITES, each under its own header
#   make lint     cargo fmt --check, clippy -D warnings, ruff, shellcheck
#   make ctl ARGS="stop mysql"   the lab's systemctl (supervisorctl on the lab's supervisor)
#   make diagnose                which layer is broken, the evidence, the fix (docs/troubleshooting.md)
#   make fault NAME=…  make heal  make drill [NAME=…]   the failure drills

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# ~/.cargo/bin is where rustup puts cargo; a root shell started without a login may lack it.
export PATH := $(PATH):$(HOME)/.cargo/bin
CARGO ?= cargo
VENV := .venv
PY := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest
LAB := nat/lab

# The suites `make test` runs, in order; a part with a suite of its own appends its target.
TEST_SUITES := test-rust test-flask test-diagnose test-e2e

.PHONY: help deps build venv up down status ctl clean test lint $(TEST_SUITES)
.PHONY: diagnose fault heal drill test-config

help:
	@sed -n '1,11s/^# \{0,1\}//p' Makefile

# --- Installing and building ------------------------------------------------------------

deps:
	@$(LAB)/deps.sh

build: deps
	@echo "== cargo build --release"
	$(CARGO) build --release

# Rebuilt when a requirements file changes; `make clean` removes it.
venv: $(VENV)/.installed
$(VENV)/.installed: flask_app/requirements.txt tests/requirements.txt diagnose/requirements.txt \
    | deps
	@echo "== $(VENV) from flask_app/, tests/ and diagnose/requirements.txt"
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check \
	    -r flask_app/requirements.txt -r tests/requirements.txt -r diagnose/requirements.txt
	@touch $@

# --- The lab -----------------------------------------------------------------------------

up: deps build venv
	@$(LAB)/up.sh

down:
	@$(LAB)/down.sh

status:
	@$(LAB)/status.sh

ctl:
	@$(LAB)/ctl.sh $(ARGS)

# Removes the lab's state too (CA, database, logs); the next `make up` starts anew.
clean: down
	rm -rf .lab

# --- The diagnosis and the drills (diagnose/, docs/troubleshooting.md) --------------------

diagnose: venv
	@diagnose/with-lab-lock.sh $(PY) -m diagnose --lab $(ARGS)

fault: venv
	@if [[ -z "$(NAME)" ]]; then \
	    echo "make fault NAME=…, one of:"; $(PY) -m diagnose.drills list; exit 2; fi
	@diagnose/with-lab-lock.sh $(PY) -m diagnose.drills fault $(NAME)

heal: venv
	@diagnose/with-lab-lock.sh $(PY) -m diagnose.drills heal

drill: venv
	@diagnose/with-lab-lock.sh $(PY) -m diagnose.drills drill $(NAME)

# --- Tests -------------------------------------------------------------------------------

# Each suite runs even when an earlier one failed, so one run shows every failure.
test: deps build venv
	@failed=(); \
	for suite in $(TEST_SUITES); do \
	    $(MAKE) --no-print-directory $$suite || failed+=("$$suite"); \
	done; \
	if [[ $${#failed[@]} -gt 0 ]]; then \
	    echo "== FAILED: $${failed[*]}"; exit 1; \
	fi; \
	echo "== all suites passed: $(TEST_SUITES)"

test-rust:
	@echo; echo "==================== Rust: cargo test --release --workspace"
	$(CARGO) test --release --workspace

# pytest exits 5 when it collected no tests; for these suites that is a failure.
define run_pytest
	@rc=0; $(PYTEST) $(1) || rc=$$?; \
	if [[ $$rc -eq 5 ]]; then echo "== no tests were collected in $(1): that is a failure"; fi; \
	exit $$rc
endef

test-flask: venv
	@echo; echo "==================== Flask app: pytest flask_app/tests"
	$(call run_pytest,flask_app/tests)

test-diagnose: venv
	@echo; echo "==================== Diagnosis probes: pytest diagnose/tests"
	$(call run_pytest,diagnose/tests)

test-e2e: venv
	@echo; echo "==================== End to end, the lab: pytest tests"
	$(call run_pytest,tests)

# The systemd units (systemd-analyze verify and security, in a throwaway root) and the
# Prometheus configuration, alert rules and their unit tests (docs/operations.md).
TEST_SUITES += test-config
test-config: deps
	@echo; echo "==================== systemd units and Prometheus configuration"
	config/check-units.sh
	promtool check config config/prometheus.yml
	promtool check rules config/alerts.yml
	promtool test rules config/alerts.test.yml

lint: venv
	@echo "== cargo fmt --check"
	$(CARGO) fmt --all --check
	@echo "== cargo clippy"
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
	@echo "== ruff"
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@echo "== shellcheck"
	git ls-files -z '*.sh' .ci/run | xargs -0 shellcheck
