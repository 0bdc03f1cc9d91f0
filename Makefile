# criops developer entry points. Every target bootstraps what it needs first.
SHELL := /bin/bash
VENV := .venv/bin
export PATH := $(CURDIR)/$(VENV):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# Tools keep their state in criops' cache (hack/lib.sh), not in the home
# directory: Ansible's temporary files and molecule's scenario state, async job
# files of local runs, SSH control sockets, kubectl's discovery cache
# (docs/test-environment.md; pytest sets the same by itself).
CRIOPS_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/criops
export ANSIBLE_HOME := $(CRIOPS_CACHE)/ansible
export ANSIBLE_ASYNC_DIR := $(CRIOPS_CACHE)/ansible/async
# For tasks delegated to this machine (artifact_fetch); a node only gets the path.
export ANSIBLE_REMOTE_TMP := $(CRIOPS_CACHE)/ansible/remote-tmp
# The SSH plugin's control path default (~/.ansible/cp) does not follow ANSIBLE_HOME.
export ANSIBLE_SSH_CONTROL_PATH_DIR := $(CRIOPS_CACHE)/ansible/cp
export KUBECACHEDIR := $(CRIOPS_CACHE)/kube-cache

.PHONY: bootstrap demo test lint unit integration molecule critest-virtlet bench bench-operator bench-fleet image clean

bootstrap:
	hack/bootstrap.sh

## The main job on this machine: a local test host and API server, the operator,
## a RuntimeNode applied and shown Ready with its critest table.
demo: bootstrap
	hack/demo.sh

## Everything CI runs. The integration suite and the molecule scenarios use test
## hosts of their own and run side by side: most of either is waiting on a test
## host. Each one's output is printed whole when it ends.
test: bootstrap lint unit
	$(MAKE) --no-print-directory -j2 --output-sync=target integration molecule

# ansible-lint keeps its cache under XDG_CACHE_HOME (else ~/.cache).
lint:
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy --cache-dir $(CRIOPS_CACHE)/mypy
	XDG_CACHE_HOME=$(CRIOPS_CACHE) $(VENV)/ansible-lint --profile production roles playbooks molecule inventory
	$(VENV)/python hack/check-argument-specs.py

unit:
	$(VENV)/pytest tests/unit

integration:
	$(VENV)/pytest -m integration --durations=25 tests/integration

# singularity_cri on Debian 13 only: tests/integration/test_singularity_cri.py
# proves the role on Debian 12 (install, idempotence, pods, critest, reset).
molecule:
	$(VENV)/molecule test -s containerd
	@if hack/legacy-runtimes.sh --mirror >/dev/null; then \
	  $(VENV)/molecule test -s singularity_cri --platform-name criops-singularity-cri-debian13 && \
	  $(VENV)/molecule test -s virtlet; \
	else \
	  echo "molecule singularity_cri and virtlet skipped: no source mirror for the legacy runtimes (docs/legacy-builds.md)"; \
	fi

## The whole critest v1.13 suite against virtlet on a fresh test host (11-15 min
## under TCG): the table of docs/critest-results.md. make test runs a focused set.
critest-virtlet: bootstrap
	$(VENV)/python -m testworld.critest_full virtlet

bench: bootstrap
	hack/bench.sh

bench-operator: bootstrap
	$(VENV)/python -m testworld.bench_operator

## site.yml and the operator on 1 test host vs BENCH_FLEET_SIZE (10) from one
## controller: wall, controller and test-host CPU seconds, Ansible's knobs compared.
bench-fleet: bootstrap
	$(VENV)/python -m testworld.bench_fleet

image: bootstrap
	hack/operator-image.sh

clean:
	hack/local-host.sh down
	rm -rf artifacts
