"""recstack/experiment."""
