"""What both entrypoints share: arguments, logging, exit codes and the termination message."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from kubetune_api import TrainerInput, load_trainer_input
from kubetune_api.run import InvalidTrainerInput
from kubetune_trainer.errors import ExitCode, TrainerError, config_error

log = logging.getLogger("kubetune_trainer")

TERMINATION_LOG_ENV = "KUBETUNE_TERMINATION_LOG"
# Set by kubetune_trainer.launch for its workers (see there).
PREEMPTED_MARKER_ENV = "KUBETUNE_PREEMPTED_MARKER"
RANK_MESSAGES_ENV = "KUBETUNE_RANK_MESSAGES"
_TERMINATION_LOG = "/dev/termination-log"
# The exit codes of a worker that stopped on SIGTERM at a step end.
STOPPED_ON_SIGTERM = (ExitCode.PREEMPTED, ExitCode.CHECKPOINT_LOST)
# Kubernetes keeps at most 4 KiB of the termination message.
_TERMINATION_LIMIT = 4096


def parse_args(prog: str, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument(
        "--config", type=Path, required=True, help="the run's input: FineTuneJob spec and run section (JSON)"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(os.environ.get("KUBETUNE_WORKDIR", "/tmp/kubetune")),
        help="scratch space for downloads and outputs (default: $KUBETUNE_WORKDIR or /tmp/kubetune)",
    )
    parser.add_argument("--progress-file", type=Path, default=None, help="also append progress as JSON lines")
    return parser.parse_args(argv)


def load_input(path: Path) -> TrainerInput:
    """The run's input document, or an INVALID_CONFIG error that names every problem."""
    try:
        return load_trainer_input(path)
    except OSError as exc:
        raise config_error(f"cannot read the run input {path}: {exc}") from exc
    except InvalidTrainerInput as exc:
        raise config_error(str(exc)) from exc


def write_termination_message(message: str) -> None:
    """Leave the failure reason where Kubernetes shows it in the pod status, if that file exists."""
    rank_messages = os.environ.get(RANK_MESSAGES_ENV)
    if rank_messages:
        # Under the distributed launcher, which picks the pod's message from its workers' (launch.py).
        Path(rank_messages, os.environ.get("RANK", "0")).write_text(message)
        return
    path = Path(os.environ.get(TERMINATION_LOG_ENV, _TERMINATION_LOG))
    # Only an existing file: the kubelet creates it in pods, and we must not litter /dev elsewhere.
    if not path.is_file() or not os.access(path, os.W_OK):
        return
    try:
        path.write_text(message.encode()[:_TERMINATION_LIMIT].decode(errors="ignore"))
    except OSError as exc:
        log.warning("cannot write termination message to %s: %s", path, exc)


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout
    )
    # Everything runs offline from local or S3 files; never reach for a model hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def run_entrypoint(name: str, job: Callable[[], object]) -> int:
    """Run `job`, turning failures into a distinct exit code and a termination message.

    A job that returns a string (its result document) leaves it as the termination message."""
    try:
        result = job()
    except TrainerError as exc:
        log.error("%s failed: %s", name, exc)
        write_termination_message(str(exc))
        if exc.exit_code in STOPPED_ON_SIGTERM and os.environ.get(PREEMPTED_MARKER_ENV):
            # Tells the distributed launcher how the stop on SIGTERM went: after a checkpoint (7), or
            # with the checkpoint lost (8). Every rank agrees on it (train.run_training).
            Path(os.environ[PREEMPTED_MARKER_ENV]).write_text(str(int(exc.exit_code)))
        return int(exc.exit_code)
    except Exception as exc:
        log.exception("%s failed unexpectedly", name)
        write_termination_message(f"{ExitCode.UNEXPECTED.name}: {type(exc).__name__}: {exc}")
        return int(ExitCode.UNEXPECTED)
    if isinstance(result, str):
        write_termination_message(result)  # the result document the operator reads
    log.info("%s finished", name)
    return 0
