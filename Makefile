# The two commands a newcomer needs: `make demo` and `make test`.
# Everything they need is installed by the project's own scripts under hack/.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help demo demo-cluster test unit e2e integration node lint system-deps node-deps kube-binaries \
	node-images kube-up kube-down bench bench-scale clean

help:
	@echo "make demo   - run the whole flow locally: a DTR-like registry, dtrtrust apply, a real pull"
	@echo "make test   - install what the tests need, then run lint and every test"
	@echo "make demo-cluster - the same on a real single-node cluster: kubectl apply -k deploy/, a pod pulled"
	@echo "make unit   - only the fast unit tests"
	@echo "make lint   - ruff, mypy and the import contracts"
	@echo "make bench  - the benchmarks (numbers go to docs/BENCHMARKS.md)"
	@echo "make bench-scale - 1,000 trusts x 1,000 nodes on the real API server (7-25 min)"

# checkov lives in its own venv: installed next to our deps it would downgrade packaging.
CHECKOV := $(VENV)/checkov/bin/checkov
export DTRTRUST_CHECKOV := $(CURDIR)/$(CHECKOV)

$(CHECKOV):
	$(PYTHON) -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/pip install --quiet 'checkov==3.3.30'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# Debian packages for the DTR-like registry and the real clients (skopeo, containerd).
system-deps:
	bash hack/install-system-deps.sh

# ... and what the real-node tier needs on top (runc, CNI plugins, iptables, mmdebstrap, buildah).
node-deps:
	bash hack/install-system-deps.sh --node

# kube-apiserver, -controller-manager, -scheduler, kubelet, kube-proxy from Debian's source, cached.
kube-binaries:
	bash hack/kube/build.sh

# The real-node tier's images (hack/image/): a Debian stand-in for the Python base, the
# project's Dockerfile built on it with buildah, the pause and workload images. Cached.
node-images: $(STAMP) node-deps
	$(PY) hack/image/nodeimages.py >/dev/null

# A single-node cluster to poke at by hand (the tests start their own).
kube-up: $(STAMP) node-deps kube-binaries node-images
	$(PY) hack/kube/cluster.py start

kube-down: $(STAMP)
	$(PY) hack/kube/cluster.py stop

lint: $(STAMP)
	$(VENV)/bin/ruff check operator tests bench deploy hack
	$(VENV)/bin/ruff format --check operator tests bench deploy hack
	$(PY) deploy/argocd/generate.py --check
	$(VENV)/bin/mypy
	# The tests and tools are typed too; one mypy run per tier (each has its conftest).
	for d in tests/unit tests/e2e tests/deploy tests/integration; do \
		MYPYPATH=operator:tests:$$d $(VENV)/bin/mypy --strict --explicit-package-bases $$d || exit 1; \
	done
	MYPYPATH=operator:tests:tests/integration:hack/image:tests/cluster $(VENV)/bin/mypy --strict \
		--explicit-package-bases tests/cluster
	MYPYPATH=operator:tests:tests/integration:tests/cluster:hack/image $(VENV)/bin/mypy --strict \
		tests/*.py bench/*.py hack/kube/cluster.py hack/image/nodeimages.py
	cd operator && ../$(VENV)/bin/lint-imports --config ../pyproject.toml

unit: $(STAMP)
	$(PY) -m pytest tests/unit

e2e: $(STAMP) system-deps
	DTRTRUST_STRICT=1 $(PY) -m pytest tests/e2e

integration: $(STAMP) kube-binaries
	DTRTRUST_STRICT=1 $(PY) -m pytest tests/integration

# The real-node tier (root): kubectl apply -k deploy/ on a kubelet + containerd node.
node: $(STAMP) node-deps kube-binaries node-images
	DTRTRUST_STRICT=1 $(PY) -m pytest tests/cluster

# The README's test command, and what CI runs: installs everything, then every test.
# DTRTRUST_STRICT=1 turns a missing test server into a failure instead of a skip.
test: $(STAMP) $(CHECKOV) system-deps node-deps kube-binaries node-images lint
	DTRTRUST_STRICT=1 $(PY) -m pytest tests

demo: $(STAMP) system-deps
	bash hack/demo.sh

demo-cluster: $(STAMP) node-deps kube-binaries node-images
	bash hack/demo-cluster.sh

bench: $(STAMP) kube-binaries
	$(PY) bench/core.py

# 1,000 trusts, 2 real agents, 1,000 simulated nodes on the real API server (about
# 15-25 minutes on 2 shared cores; not part of `make test`). Figures: docs/BENCHMARKS.md.
bench-scale: $(STAMP) kube-binaries
	$(PY) bench/scale.py --trusts 1000 --nodes 1000 --changes 20
	$(PY) bench/agent_latency.py --changes 300

clean:
	rm -rf $(VENV) _demo _demo-cluster .work
