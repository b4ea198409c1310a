"""One module per provider. Each is imported only when a request uses it (see registry)."""
