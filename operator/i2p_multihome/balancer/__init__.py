"""balancer layer."""
