"""recstack/core."""
