"""Kubernetes I/O for the operator; decisions live in status.py, objects in builders/."""
