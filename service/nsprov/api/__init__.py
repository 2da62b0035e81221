"""API wing: the HTTP contract, its limits, and the provisioner behind it."""
