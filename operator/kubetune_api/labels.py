"""The labels on the operator's children: the operator writes them, the CLI finds pods by them, so they
are declared once, here. Also the Job and JobSet controllers' pod labels both sides read."""

from __future__ import annotations

FINETUNEJOB_LABEL = "kubetune.dev/finetunejob"
RUN_ID_LABEL = "kubetune.dev/run-id"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "kubetune-operator"

# COMPONENT_LABEL values.
TRAINER = "trainer"
EXPORTER = "exporter"
# The dry run's CPU-only pod (spec.dryRun).
PLANNER = "planner"

# Set by the JobSet controller on its Jobs and pods, and by the Job controller on Indexed Jobs' pods.
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
JOBSET_RESTART_LABEL = "jobset.sigs.k8s.io/restart-attempt"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
