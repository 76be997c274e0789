"""Error types whose exit codes tell the operator which stage failed and whether a retry can help."""

from __future__ import annotations

# Re-exported: the trainer raises the API's exit codes.
from kubetune_api.exit_codes import ExitCode as ExitCode


class TrainerError(Exception):
    """A failure with a known cause; its message is written to the pod's termination log."""

    def __init__(self, exit_code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message

    def __str__(self) -> str:
        return f"{self.exit_code.name}: {self.message}"


def config_error(message: str) -> TrainerError:
    return TrainerError(ExitCode.INVALID_CONFIG, message)


def data_error(message: str) -> TrainerError:
    return TrainerError(ExitCode.DATA, message)


def storage_error(message: str) -> TrainerError:
    return TrainerError(ExitCode.STORAGE, message)


def model_error(message: str) -> TrainerError:
    return TrainerError(ExitCode.MODEL, message)


def export_error(message: str) -> TrainerError:
    return TrainerError(ExitCode.EXPORT, message)


def quality_gate_error(message: str) -> TrainerError:
    return TrainerError(ExitCode.QUALITY_GATE, message)
