"""Shared pytest plugins: one private i2pd testnet and one control plane per session."""

pytest_plugins = ["e2e.fixtures_testnet", "e2e.fixtures_cluster"]
