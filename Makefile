# The two commands of the README: `make demo` runs the main job on an embedded default
# (a private i2pd testnet on this machine), `make test` runs the whole test suite.
PYTHON ?= python3
DEMO_DIR ?= /tmp/i2p-multihome-demo
LINT_PATHS = operator testbed tests e2e benchmarks

.PHONY: bootstrap test lint unit demo demo-down bench bench-floodfill soak soak-failover

bootstrap:
	scripts/bootstrap

lint: bootstrap
	ruff check $(LINT_PATHS)
	ruff format --check $(LINT_PATHS)
	mypy

unit: bootstrap
	$(PYTHON) -m pytest -q -x tests

# Build (or find cached) kube-apiserver and helm before the tests, outside any test timeout.
test: lint
	i2p-multihome-dev cluster build
	$(PYTHON) -m pytest -x -ra --durations=15 tests e2e

# The testnet, the local control plane, the Helm chart installed into it, the operator running
# with the chart ServiceAccount's credentials, the example applied; prints it once Ready.
# Run it again to reuse what runs; `make demo-down` removes it all.
demo: bootstrap
	i2p-multihome-dev demo up --dir $(DEMO_DIR)

demo-down:
	i2p-multihome-dev demo down --dir $(DEMO_DIR)

bench: bootstrap
	$(PYTHON) benchmarks/bench_leaseset.py

# Floodfill load and failover side by side (naive, single-homed, 4 and 8 routers) on one
# testnet of its own, about 50 minutes; writes benchmarks/results/.
bench-floodfill: bootstrap
	$(PYTHON) benchmarks/bench_floodfill.py

# 5 destinations through 30 minutes of random router kills and restarts; writes results.
soak-failover: bootstrap
	$(PYTHON) benchmarks/soak_failover.py

# 15 minutes of floodfill samples on a testnet of its own; writes benchmarks/results/.
soak: bootstrap
	$(PYTHON) benchmarks/soak.py
