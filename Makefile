# The verbs a newcomer needs. Everything runs from a local virtualenv (.venv).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST := $(PY) -m pytest

.PHONY: install cluster-build cluster cluster-down demo test test-unit test-integration \
        test-action test-kind test-node node-build lint bench chaos

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[server,dev]'
	touch $@

install: $(VENV)/.installed

# Builds etcd, kube-apiserver, kube-controller-manager and kubectl from Go modules
# into ~/.cache/nsprov (many minutes the first time, a no-op afterwards).
cluster-build: install
	$(PY) -m tests.cluster build

# kube-scheduler, kubelet and the node's images (pause, busybox, a Debian Python base,
# nsprov's own from the Dockerfile): a few minutes the first time, cached afterwards.
node-build: cluster-build
	$(PY) -m tests.cluster build --node
	$(PY) -m tests.cluster images

# A local control plane in the background; its admin kubeconfig is .cluster/kubeconfig.
# NODE=1 adds a real node (root, containerd, runc, CNI plugins; see README).
cluster: cluster-build
	$(PY) -m tests.cluster up $(if $(NODE),--node)

cluster-down:
	@if [ -x $(PY) ]; then $(PY) -m tests.cluster down; else echo "control plane not running"; fi

# A provisioner on the local control plane (or on $$KUBECONFIG's cluster), used once with curl.
demo: cluster-build
	$(PY) -m tests.demo

# kind first: it skips here, and the last summary CI reads should be a run that ran tests.
test: test-kind test-unit test-integration test-node test-action

test-unit: install
	$(PYTEST) tests/unit

test-integration: cluster-build
	$(PYTEST) tests/integration

test-action:
	node --test action/test/*.test.js

# Needs docker and kind; the tests skip with a reason where they are missing.
test-kind: install
	$(PYTEST) tests/kind || [ $$? -eq 5 ]

# nsprov's image on a real node (tests/node); skips with the reason where no node can start.
test-node: cluster-build
	$(PYTEST) tests/node || [ $$? -eq 5 ]

lint: install
	$(VENV)/bin/ruff check service tests
	$(VENV)/bin/ruff format --check service tests
	$(VENV)/bin/mypy

# Several minutes: creates 5,000 namespaces, then a burst of 500 expiring within 10 s, then
# the hostile clients of issue 19 (labelled objects, unfinished heads, slow clients, big tokens),
# then warm pools and first calls (issue 21: 2,000 creates, each kubeconfig used at once).
bench: cluster-build
	$(PY) -m tests.bench provision
	$(PY) -m tests.bench controller --live 5000
	$(PY) -m tests.bench burst --count 500 --window 10
	$(PY) -m tests.bench hostile
	$(PY) -m tests.bench pool

# Replicas and kube-apiserver SIGKILLed under a stream of creates for CHAOS_SECONDS
# (a 15 s version, with the burst and flood tests, runs in test-integration); NSPROV_CHAOS_SEED repeats a run's choices.
CHAOS_SECONDS ?= 600
chaos: cluster-build
	NSPROV_CHAOS_SECONDS=$(CHAOS_SECONDS) $(PYTEST) tests/integration/test_chaos.py -s
