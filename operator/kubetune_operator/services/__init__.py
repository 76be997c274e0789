"""Kubernetes I/O for the operator; decisions live in policies/, objects in builders/."""
