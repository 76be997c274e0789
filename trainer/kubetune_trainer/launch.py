"""Distributed launcher: torchrun (torch.distributed.run) with the trainer's exit codes kept.

    python -m kubetune_trainer.launch <torchrun arguments> -m kubetune_trainer.train --config ...

torchrun itself exits 1 whatever its workers exit with, and a SIGTERM makes it raise instead of
reporting why the workers stopped. The operator's podFailurePolicy needs the trainer's own codes:
2-6 fail the Job at once, 7 (checkpointed on SIGTERM) is not counted, 8 (stopped on SIGTERM, checkpoint
not uploaded) is. So this runs torchrun in-process and exits with the first failed worker's code; on
SIGTERM (workers are given TORCH_ELASTIC_SHUTDOWN_TIMEOUT seconds to checkpoint) it exits 7 if they
stopped after a stored checkpoint, 8 if they stopped but it did not upload.

The pod's termination message matches: the workers leave theirs in a folder, and the launcher passes
on the first failed worker's, or on success the first worker's (rank 0's result document on pod 0).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

from kubetune_trainer.cli import PREEMPTED_MARKER_ENV, RANK_MESSAGES_ENV, write_termination_message
from kubetune_trainer.errors import ExitCode

log = logging.getLogger("kubetune_trainer.launch")


def exit_code_of_signal(signum: int) -> int:
    return 128 + signum


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    scratch = Path(tempfile.mkdtemp(prefix="kubetune-launch-"))
    marker, messages = scratch / "preempted", scratch / "messages"
    messages.mkdir()
    os.environ[PREEMPTED_MARKER_ENV] = str(marker)
    os.environ[RANK_MESSAGES_ENV] = str(messages)
    try:
        run(parse_args(argv))
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        code = failure.exitcode if failure.exitcode > 0 else exit_code_of_signal(-failure.exitcode)
        log.error("worker rank %d failed first, exit code %d", rank, code)
        pass_on_message(messages, rank)
        return code
    except SignalException as exc:
        pass_on_message(messages, None)
        if marker.exists():
            code = stopped_code(marker)
            log.warning("stopped on %s at a step end: %s", exc.sigval.name, code.meaning)
            return int(code)
        log.error("stopped on %s before the workers could checkpoint", exc.sigval.name)
        return exit_code_of_signal(int(exc.sigval))
    pass_on_message(messages, None)
    return 0


def stopped_code(marker: Path) -> ExitCode:
    """What the workers that stopped on SIGTERM left in the marker: 7, or 8 if the checkpoint was lost."""
    text = marker.read_text().strip()
    return ExitCode.CHECKPOINT_LOST if text == str(int(ExitCode.CHECKPOINT_LOST)) else ExitCode.PREEMPTED


def pass_on_message(messages: Path, rank: int | None) -> None:
    """Write worker `rank`'s message (else the lowest rank's) as the pod's termination message."""
    by_rank = {int(p.name): p for p in messages.iterdir() if p.name.isdigit()}
    chosen = by_rank.get(rank) if rank is not None else None
    if chosen is None and by_rank:
        chosen = by_rank[min(by_rank)]
    if chosen is not None:
        os.environ.pop(RANK_MESSAGES_ENV, None)  # this one goes to the real termination log
        write_termination_message(chosen.read_text())


if __name__ == "__main__":
    sys.exit(main())
