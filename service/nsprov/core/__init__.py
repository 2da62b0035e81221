"""Ground floor: errors, the Kubernetes client, settings and small shared shapes."""
