"""Pure builders: FineTuneJob in, Kubernetes objects out. No I/O here."""
