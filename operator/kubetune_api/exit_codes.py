"""The trainer's exit codes: the one list that the trainer raises, the Job builder turns into a
podFailurePolicy and the status logic explains to the user."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    UNEXPECTED = 1
    INVALID_CONFIG = 2
    DATA = 3
    STORAGE = 4
    MODEL = 5
    EXPORT = 6
    # Stopped on SIGTERM with a checkpoint saved: not a failure, the replacement pod resumes.
    PREEMPTED = 7
    # Stopped on SIGTERM, but the checkpoint of that step did not upload: the replacement pod resumes
    # from an older checkpoint (or the start), so the stop counts against backoffLimit, unlike 7.
    CHECKPOINT_LOST = 8
    # The export missed a minimum of export.gate: its files are under <run>/rejected/, none promoted.
    QUALITY_GATE = 9

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]

    @property
    def permanent(self) -> bool:
        """A retry cannot help: the podFailurePolicy fails the Job at once."""
        return self in PERMANENT


_MEANINGS = {
    ExitCode.UNEXPECTED: "unexpected error",
    ExitCode.INVALID_CONFIG: "invalid configuration",
    ExitCode.DATA: "dataset error",
    ExitCode.STORAGE: "storage or credentials error",
    ExitCode.MODEL: "model error",
    ExitCode.EXPORT: "export error",
    ExitCode.PREEMPTED: "stopped on SIGTERM after a checkpoint; resuming",
    ExitCode.CHECKPOINT_LOST: "stopped on SIGTERM but the checkpoint did not upload; retrying from an "
    "older checkpoint",
    ExitCode.QUALITY_GATE: "quality gate failed; the export was kept under rejected/ and not promoted",
}

PERMANENT = frozenset(
    {
        ExitCode.INVALID_CONFIG,
        ExitCode.DATA,
        ExitCode.STORAGE,
        ExitCode.MODEL,
        ExitCode.EXPORT,
        ExitCode.QUALITY_GATE,
    }
)

# Exit codes of signals, as the container runtime reports them (128 + signal number).
SIGNAL_MEANINGS = {137: "killed (SIGKILL)", 143: "terminated (SIGTERM)"}


def describe_exit_code(code: int) -> str | None:
    """What an exit code means to a person, or None for a code nobody defined."""
    if code in SIGNAL_MEANINGS:
        return SIGNAL_MEANINGS[code]
    try:
        return ExitCode(code).meaning
    except ValueError:
        return None
