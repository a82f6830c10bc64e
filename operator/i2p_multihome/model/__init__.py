"""The MultihomedDestination resource as typed models: the single source of truth for the
manifest the standalone balancer reads, the CRD schema, and the status both write."""
