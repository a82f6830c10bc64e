"""End-to-end tests against real processes: a Kubernetes API server, I2P routers."""
