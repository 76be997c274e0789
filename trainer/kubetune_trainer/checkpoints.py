"""Checkpoints that survive losing the pod.

The HF Trainer writes a checkpoint folder (weights or adapter, optimizer, scheduler, RNG states and the
trainer state that holds the data position) every saveSteps and when SIGTERM arrives. Each one is
uploaded to <output.uri>/checkpoints/checkpoint-<step>/ and marked complete by a last, separate object
that records the sha256 of every file, so a pod killed mid-upload never leaves a checkpoint that looks
whole. A new trainer pod of the same run downloads the newest complete checkpoint, checks every file
against that record and resumes from it.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from kubetune_api.layout import CHECKPOINTS_DIR
from kubetune_trainer import distributed, integrity
from kubetune_trainer.errors import ExitCode, TrainerError
from kubetune_trainer.progress import ProgressSink, utc_now
from kubetune_trainer.storage import Storage, join_uri

log = logging.getLogger(__name__)

# Written after every other file of a checkpoint: its presence means the upload finished, and it holds
# the sha256 of every other file (integrity.record).
COMPLETE_MARKER = "checkpoint-complete"
_FOLDER = re.compile(r"^checkpoint-(\d+)$")
# Checkpoints kept in S3 besides the best one: the newest and the one before it.
KEEP_NEWEST = 2


@dataclass(frozen=True)
class StoredCheckpoint:
    step: int
    uri: str


def folder_name(step: int) -> str:
    return f"checkpoint-{step}"


class CheckpointStore:
    """The run's checkpoints under <output.uri>/checkpoints/."""

    def __init__(self, storage: Storage, output_uri: str) -> None:
        self.storage = storage
        self.uri = join_uri(output_uri, CHECKPOINTS_DIR)

    def complete(self) -> list[StoredCheckpoint]:
        """Fully uploaded checkpoints, oldest first."""
        steps = set()
        for path in self.storage.list_folder(self.uri):
            folder, _, name = path.partition("/")
            match = _FOLDER.match(folder)
            if match and name == COMPLETE_MARKER:
                steps.add(int(match.group(1)))
        return [StoredCheckpoint(step, join_uri(self.uri, folder_name(step))) for step in sorted(steps)]

    def upload(self, folder: Path, step: int, scratch: Path) -> StoredCheckpoint:
        uri = join_uri(self.uri, folder_name(step))
        entries = self.storage.upload_dir(folder, uri)
        marker = json.dumps(integrity.record(entries), sort_keys=True).encode()
        self.storage.upload_bytes(marker, join_uri(uri, COMPLETE_MARKER), scratch)
        return StoredCheckpoint(step, uri)

    def download(self, checkpoint: StoredCheckpoint, root: Path) -> Path:
        """The checkpoint as the local folder root/checkpoint-<step>, every file checked against the
        sha256 its marker records; reused when a process of this pod already fetched and checked it."""
        local = root / folder_name(checkpoint.step)
        if (local / COMPLETE_MARKER).exists():
            return local
        shutil.rmtree(local, ignore_errors=True)
        staging = root / f".{folder_name(checkpoint.step)}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        fetched = self.storage.download(checkpoint.uri, staging)
        marker = fetched / COMPLETE_MARKER
        digests = integrity.parse_record(marker.read_text(), join_uri(checkpoint.uri, COMPLETE_MARKER))
        integrity.verify_folder(fetched, digests, checkpoint.uri, ignore=[COMPLETE_MARKER])
        # Only a checked folder gets the name the Trainer (and this pod's other processes) look for.
        if fetched == staging:
            staging.rename(local)
        else:  # a local output folder is not downloaded: copy it where it is expected
            shutil.copytree(fetched, local)
        return local

    def prune(self, keep_step: int | None) -> None:
        """Delete all but the newest checkpoints and the best one (`keep_step`). The marker goes first,
        so a checkpoint whose deletion is cut short is never taken for a whole one."""
        stored = self.complete()
        keep = {c.step for c in stored[-KEEP_NEWEST:]} | ({keep_step} if keep_step is not None else set())
        for checkpoint in stored:
            if checkpoint.step not in keep:
                self.storage.delete_file(join_uri(checkpoint.uri, COMPLETE_MARKER))
                self.storage.delete_folder(checkpoint.uri)

    def retain(self, keep: str, best: int | None) -> list[int]:
        """After a successful training: keep `all` checkpoints, the `best` (else the newest) or
        `none` (spec.output.keepCheckpoints). Returns the steps deleted."""
        stored = self.complete()
        if keep == "all" or not stored:
            return []
        kept = set()
        if keep == "best":
            steps = {c.step for c in stored}
            kept = {best if best in steps else stored[-1].step}
        deleted = []
        for checkpoint in stored:
            if checkpoint.step not in kept:
                self.storage.delete_file(join_uri(checkpoint.uri, COMPLETE_MARKER))
                self.storage.delete_folder(checkpoint.uri)
                deleted.append(checkpoint.step)
        return deleted


def best_step(state: Any) -> int | None:
    """The step of the HF Trainer's best checkpoint so far (early stopping), if any."""
    step = getattr(state, "best_global_step", None)
    if step:
        return int(step)
    path = getattr(state, "best_model_checkpoint", None)
    match = _FOLDER.match(Path(path).name) if path else None
    return int(match.group(1)) if match else None


def restore(store: CheckpointStore, root: Path) -> StoredCheckpoint | None:
    """Download the newest complete checkpoint and, if early stopping recorded one, the best, into
    `root` (the Trainer's output_dir, the same path on every pod): the Trainer then finds the best
    checkpoint where its state says it is, keeps it, and loads it at the end."""
    stored = store.complete()
    if not stored:
        return None
    latest = stored[-1]
    local = store.download(latest, root)
    state_file = local / "trainer_state.json"
    best = json.loads(state_file.read_text()).get("best_global_step") if state_file.exists() else None
    for checkpoint in stored:
        if best and checkpoint.step == best and checkpoint.step != latest.step:
            store.download(checkpoint, root)
    return latest


class CheckpointUploader(TrainerCallback):
    """After each local save: upload it, record it as status.lastCheckpoint, and prune old ones.

    Only the first process of the whole job uploads: every rank holds the same weights."""

    def __init__(
        self, store: CheckpointStore, sink: ProgressSink, scratch: Path, extra_folders: dict[Path, str]
    ) -> None:
        self.store, self.sink, self.scratch = store, sink, scratch
        # Local folders uploaded with every checkpoint (TensorBoard event files), and where to.
        self.extra_folders = extra_folders
        # The steps whose checkpoint is stored, and why the latest failed upload failed.
        self.uploaded: set[int] = set()
        self.failures: dict[int, str] = {}

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        step = int(state.global_step)
        folder = Path(args.output_dir) / folder_name(step)
        if not folder.is_dir():
            log.warning("no local checkpoint at %s to upload", folder)
            self.failures[step] = f"no local checkpoint at {folder}"
            return
        try:
            stored = self.store.upload(folder, step, self.scratch)
        except TrainerError as exc:
            # Not fatal while training goes on: the next save tries again (a resume would use the
            # previous checkpoint). On SIGTERM there is no next save: see lost_on_stop.
            log.warning("checkpoint of step %d not uploaded: %s", step, exc)
            self.failures[step] = exc.message
            return
        self.uploaded.add(step)
        log.info("checkpoint of step %d uploaded to %s", step, stored.uri)
        self.sink.checkpoint({"step": step, "uri": stored.uri, "time": utc_now()})
        try:
            self.upload_extras()
            self.store.prune(best_step(state))
        except TrainerError as exc:
            log.warning("after the checkpoint of step %d: %s", step, exc)

    def upload_extras(self) -> None:
        for folder, uri in self.extra_folders.items():
            if folder.is_dir():
                self.store.storage.upload_dir(folder, uri)

    def lost_on_stop(self, step: int) -> str | None:
        """Why the checkpoint of the step training stopped at is not stored, or None if it is (or this
        process is not the one that uploads)."""
        if not distributed.is_main() or step in self.uploaded:
            return None
        return self.failures.get(step, "no checkpoint was saved at that step")


class Preempted(TrainerError):
    """Training stopped on SIGTERM after its checkpoint was saved; a new pod resumes from it."""

    def __init__(self, step: int) -> None:
        super().__init__(
            ExitCode.PREEMPTED, f"stopped on SIGTERM at step {step} after checkpointing; resume will follow"
        )


class CheckpointLost(TrainerError):
    """Training stopped on SIGTERM, but the checkpoint of that step is not in S3: the replacement pod
    resumes from an older one (or the start). Not PREEMPTED, so the stop counts against backoffLimit
    and a store that keeps refusing uploads cannot loop forever."""

    def __init__(self, step: int, reason: str) -> None:
        super().__init__(
            ExitCode.CHECKPOINT_LOST,
            f"stopped on SIGTERM at step {step}, but its checkpoint did not upload ({reason}); the steps "
            "since the last stored checkpoint are lost",
        )


class PreemptionWatch(TrainerCallback):
    """Turns SIGTERM into "save a checkpoint now, then stop" at the end of the current step.

    Every rank must stop at the same step, or the others would wait forever in the next collective: the
    flag is shared across ranks each step (one tiny all-reduce), so a SIGTERM to one pod of a multi-node
    job checkpoints and stops them all."""

    def __init__(self) -> None:
        self._signalled = threading.Event()
        self.stopped_at: int | None = None

    def install(self) -> PreemptionWatch:
        signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        log.warning("SIGTERM: checkpointing at the end of this step, then stopping")
        self._signalled.set()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if distributed.any_rank(self._signalled.is_set()):
            control.should_save = True
            control.should_training_stop = True
            # The grace period is for the checkpoint; an evaluation due at this step would eat it.
            control.should_evaluate = False
            self.stopped_at = int(state.global_step)

    @property
    def preempted(self) -> bool:
        return self.stopped_at is not None
