"""Checkpoints that survive losing the pod.

The HF Trainer writes a checkpoint folder (weights or adapter, optimizer, scheduler, RNG states and the
trainer state that holds the data position) every saveSteps and when SIGTERM arrives. Each one is
uploaded to <output.uri>/checkpoints/checkpoint-<step>/ and marked complete by a last, separate object,
so a pod killed mid-upload never leaves a checkpoint that looks whole. A new trainer pod of the same run
downloads the newest complete checkpoint and resumes from it.
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
from kubetune_trainer import distributed
from kubetune_trainer.errors import ExitCode, TrainerError
from kubetune_trainer.progress import ProgressSink, utc_now
from kubetune_trainer.storage import Storage, join_uri

log = logging.getLogger(__name__)

# Written after every other file of a checkpoint: its presence means the upload finished.
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
        self.storage.upload_dir(folder, uri)
        self.storage.upload_bytes(b"", join_uri(uri, COMPLETE_MARKER), scratch)
        return StoredCheckpoint(step, uri)

    def download(self, checkpoint: StoredCheckpoint, root: Path) -> Path:
        """The checkpoint as the local folder root/checkpoint-<step>; reused when already complete."""
        local = root / folder_name(checkpoint.step)
        if (local / COMPLETE_MARKER).exists():
            return local
        fetched = self.storage.download(checkpoint.uri, local)
        if fetched != local:  # a local output folder is not downloaded: copy it where it is expected
            shutil.copytree(fetched, local, dirs_exist_ok=True)
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

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        step = int(state.global_step)
        folder = Path(args.output_dir) / folder_name(step)
        if not folder.is_dir():
            log.warning("no local checkpoint at %s to upload", folder)
            return
        try:
            stored = self.store.upload(folder, step, self.scratch)
        except TrainerError as exc:
            # Not fatal: training goes on, and the next save tries again (a resume would use the
            # previous checkpoint).
            log.warning("checkpoint of step %d not uploaded: %s", step, exc)
            return
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


class Preempted(TrainerError):
    """Training stopped on SIGTERM after its checkpoint was saved; a new pod resumes from it."""

    def __init__(self, step: int) -> None:
        super().__init__(
            ExitCode.PREEMPTED, f"stopped on SIGTERM at step {step} after checkpointing; resume will follow"
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
