"""Ground: the policy file and what it gives a tenant's namespaces."""
