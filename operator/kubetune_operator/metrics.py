"""Prometheus metrics of the operator."""

from __future__ import annotations

from prometheus_client import Counter

RECONCILES = Counter("kubetune_reconciles_total", "Reconciliation passes, by resulting phase.", ["phase"])
INVALID_SPECS = Counter("kubetune_invalid_specs_total", "FineTuneJobs rejected for an invalid spec.")
