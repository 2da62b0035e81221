# The verbs a newcomer needs. Everything runs from a local virtualenv (.venv).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST := $(PY) -m pytest

.PHONY: install cluster-build cluster cluster-down demo test test-unit test-integration \
        test-action test-kind test-node test-monitoring node-build tools-build lint release-check \
        policy-schema bench chaos docs-api docs-serve

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

# The release tooling, helm (the chart's tests) and actionlint (`make lint`), from their Go
# modules into ~/.cache/nsprov: about 5 minutes the first time, a no-op afterwards.
tools-build: install
	$(PY) -m tests.cluster build --tools

# A local control plane in the background; its admin kubeconfig is .cluster/kubeconfig.
# NODE=1 adds a real node (root, containerd, runc, CNI plugins; see docs/development.md).
cluster: cluster-build
	$(PY) -m tests.cluster up $(if $(NODE),--node)

cluster-down:
	@if [ -x $(PY) ]; then $(PY) -m tests.cluster down; else echo "control plane not running"; fi

# A provisioner on the local control plane (or on $$KUBECONFIG's cluster), used once with curl.
demo: cluster-build
	$(PY) -m tests.demo

# kind first: it skips here, and the last summary CI reads should be a run that ran tests.
test: test-kind test-unit test-monitoring test-integration test-node test-action

test-unit: install
	$(PYTEST) tests/unit

# k8s/monitoring offline: promtool's unit tests of the alerts, the dashboard's queries parsed,
# the component rendered onto k8s/ (promtool: Debian's prometheus package; .ci/run installs it).
test-monitoring: cluster-build
	$(PYTEST) tests/monitoring

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

HELM := $(PY) -m tests.cluster tool helm
ACTIONLINT := $(PY) -m tests.cluster tool actionlint

# The policy file's JSON Schema, rendered from service/nsprov/policy/schema.py: the package's
# copy (nsprov policy schema) and the stable path editors point at. test_policy_schema.py
# fails when either is stale.
POLICY_SCHEMAS := service/nsprov/policy/policy.schema.json schemas/policy.schema.json
policy-schema: install
	$(PY) -m nsprov.policy.schema $(POLICY_SCHEMAS)

lint: install tools-build
	$(VENV)/bin/ruff check service tests
	$(VENV)/bin/ruff format --check service tests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(ACTIONLINT) .github/workflows/*.yml
	$(VENV)/bin/mkdocs build --strict --quiet --site-dir site

# docs/api.md from the OpenAPI document nsprov serves (a unit test fails when it is stale).
docs-api: install
	$(PY) -m tests.docs_api > docs/api.md

# The documentation site at http://127.0.0.1:8000, rebuilt as docs/ changes.
docs-serve: install
	$(VENV)/bin/mkdocs serve

# Every build step of .github/workflows/release.yml, here: sdist and wheel, twine check, each
# installed into a fresh virtualenv, nsprov's image (buildah, as the node's; root), the chart.
RELEASE_DIR := dist
release-check: install tools-build
	rm -rf $(RELEASE_DIR) .release-venv
	$(PY) -m build --outdir $(RELEASE_DIR) .
	$(PY) -m twine check --strict $(RELEASE_DIR)/*
	for dist in $(RELEASE_DIR)/*.whl $(RELEASE_DIR)/*.tar.gz; do \
	    $(PYTHON) -m venv .release-venv && \
	    .release-venv/bin/pip install --quiet "$$dist" && \
	    test "$$(.release-venv/bin/nsprov --version)" = "nsprov $$($(PY) -c 'import nsprov; print(nsprov.__version__)')" && \
	    .release-venv/bin/nsprov policy schema | cmp - schemas/policy.schema.json && \
	    echo "$$dist installs: $$(.release-venv/bin/nsprov --version)" && \
	    rm -rf .release-venv || exit 1; \
	done
	$(PY) -m tests.cluster image
	$(HELM) lint --strict charts/nsprov
	$(HELM) package charts/nsprov --destination $(RELEASE_DIR)
	$(ACTIONLINT) .github/workflows/*.yml

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
	NSPROV_CHAOS_SECONDS=$(CHAOS_SECONDS) $(PYTEST) tests/integration/chaos -s
