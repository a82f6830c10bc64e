"""The Kubernetes layer: kopf handlers, the keys Secret, status, events and metrics."""
