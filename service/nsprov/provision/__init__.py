"""Ground: what a provisioned namespace consists of, its grant, its metrics."""
