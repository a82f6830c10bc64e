# The two commands of the README: `make demo` runs the main job on an embedded default
# (a private i2pd testnet on this machine), `make test` runs the whole test suite.
PYTHON ?= python3
DEMO_DIR ?= /tmp/i2p-multihome-demo

.PHONY: bootstrap test lint unit demo demo-down bench

bootstrap:
	scripts/bootstrap

lint: bootstrap
	ruff check operator tests e2e benchmarks
	ruff format --check operator tests e2e benchmarks
	mypy

unit: bootstrap
	$(PYTHON) -m pytest -q -x tests

# Build (or find cached) kube-apiserver and helm before the tests, outside any test timeout.
test: lint
	i2p-multihome cluster build
	$(PYTHON) -m pytest -x -ra --durations=15 tests e2e

# The testnet, the local control plane, the Helm chart installed into it, the operator running
# with the chart ServiceAccount's credentials, the example applied; prints it once Ready.
# Run it again to reuse what runs; `make demo-down` removes it all.
demo: bootstrap
	i2p-multihome demo up --dir $(DEMO_DIR)

demo-down:
	i2p-multihome demo down --dir $(DEMO_DIR)

bench: bootstrap
	$(PYTHON) benchmarks/bench_leaseset.py
