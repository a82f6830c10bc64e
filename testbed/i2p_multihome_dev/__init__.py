"""The test bed of i2p-multihome: a private i2pd testnet, a local Kubernetes control plane,
the demo, and the helpers tests, benchmarks and the demo share to run and observe the product.

It may import the product (`i2p_multihome`); the product never imports it.
"""
