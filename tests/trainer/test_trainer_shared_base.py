"""Swappable adapters on a shared base: two jobs on one base model share one content-addressed base ONNX
model, each adds only its own .onnx_adapter, onnxruntime-genai switches between them per request, and
an adapter from another base is refused. Tiny random Llamas on local paths; the same on SmolLM2 through
the operator is tests/e2e/test_export_adapters.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubetune_api import TrainerInput
from kubetune_api.layout import ADAPTER_RECORD_FILE, BASE_RECORD_FILE, ONNX_ADAPTER_DIR, ONNX_ADAPTER_FILE
from kubetune_api.manifest import Manifest
from kubetune_trainer import shared_base

TARGET = {"precision": "fp32"}


def trained(make_input: Any, base_dir: Path, root: Path, name: str, seed: int, bases: Path) -> TrainerInput:
    """A few LoRA steps on `base_dir`, as job `name`, exporting its bases to `bases`."""
    from kubetune_trainer.progress import LoggingSink
    from kubetune_trainer.train import train

    job = make_input(
        str(base_dir),
        str(root / name),
        training={"maxSteps": 4, "learningRate": 5e-2, "batchSize": 4, "maxSeqLength": 32, "seed": seed},
        export={"targets": [TARGET], "adapter": True, "evalSamples": 4, "maxNewTokens": 4},
    )
    run = job.run.model_copy(update={"name": name, "shared_bases_root": str(bases)})
    job = job.model_copy(update={"run": run})
    train(job, root / f"{name}-work", LoggingSink())
    return job


@pytest.fixture(scope="module")
def two_jobs(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, make_input: Any
) -> dict[str, Any]:
    from kubetune_trainer.export import export

    root = tmp_path_factory.mktemp("shared-base")
    bases = root / "bases"
    jobs = [
        trained(make_input, tiny_model_dir, root, name, seed, bases) for name, seed in (("a", 1), ("b", 2))
    ]
    manifests = [export(job, root / f"{job.run.name}-export").manifest for job in jobs]
    return {"root": root, "bases": bases, "jobs": jobs, "manifests": manifests}


def shared(manifest: Manifest) -> Any:
    [target] = manifest.targets
    assert target.shared_base is not None
    return target.shared_base


def test_the_second_job_reuses_the_first_jobs_base(two_jobs: dict[str, Any]) -> None:
    first, second = (shared(m) for m in two_jobs["manifests"])
    assert first.key == second.key and first.uri == second.uri
    assert (first.reused, second.reused) == (False, True)
    # One base on disk, written once (beside the claim of the job that stored it); each job wrote only
    # its own adapter beside its run.
    [base] = [p for p in two_jobs["bases"].iterdir() if p.name != shared_base.CLAIMS_DIR]
    assert (two_jobs["bases"] / shared_base.CLAIMS_DIR / f"{first.key}.json").is_file()
    assert base.name == first.key and (base / BASE_RECORD_FILE).is_file()
    for job in two_jobs["jobs"]:
        adapter = Path(job.run.output_root) / ONNX_ADAPTER_DIR / "fp32-cpu"
        assert sorted(p.name for p in adapter.iterdir()) == [ADAPTER_RECORD_FILE, ONNX_ADAPTER_FILE]
        assert json.loads((adapter / ADAPTER_RECORD_FILE).read_text())["base"]["key"] == first.key
    # Both manifests list the same base files, with the digests base.json records.
    listings = [
        {f.path: f.sha256 for a in m.artifacts if a.kind == "onnxBase" for f in a.files}
        for m in two_jobs["manifests"]
    ]
    assert listings[0] == listings[1] and "model.onnx" in listings[0]


def test_one_base_switches_between_the_two_adapters_per_request(two_jobs: dict[str, Any]) -> None:
    import onnxruntime_genai as og

    base = two_jobs["bases"] / shared(two_jobs["manifests"][0]).key
    model = og.Model(str(base))
    adapters = og.Adapters(model)
    for job in two_jobs["jobs"]:
        adapters.load(
            str(Path(job.run.output_root) / ONNX_ADAPTER_DIR / "fp32-cpu" / ONNX_ADAPTER_FILE), job.run.name
        )
    prompt = og.Tokenizer(model).encode("Phrase: The hotel was lovely.\nTone:")

    def answer(adapter: str | None) -> list[int]:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(prompt) + 6, do_sample=False)
        generator = og.Generator(model, params)
        if adapter is not None:
            generator.set_active_adapter(adapters, adapter)
        generator.append_tokens(prompt)
        while not generator.is_done():
            generator.generate_next_token()
        return list(generator.get_sequence(0))[len(prompt) :]

    a, b, none, a_again = answer("a"), answer("b"), answer(None), answer("a")
    assert a == a_again, "switching adapters must not leave state behind"
    assert len({tuple(a), tuple(b), tuple(none)}) == 3, (a, b, none)
    # Each pair answers as its own merged model does, on every held-out row the export measured.
    for manifest in two_jobs["manifests"]:
        metrics = manifest.targets[0].metrics
        assert metrics["adapterParity"] == 1.0 and metrics["adapterExactMatch"] == metrics["exactMatch"]


def test_an_adapter_from_another_base_is_refused(
    two_jobs: dict[str, Any], tmp_path: Path, make_input: Any
) -> None:
    from devcluster.model import write_tiny_llama
    from kubetune_trainer.errors import TrainerError
    from kubetune_trainer.export import export
    from kubetune_trainer.shared_base import check_adapter

    other_base = write_tiny_llama(tmp_path / "other-llama", seed=7)
    job = trained(make_input, other_base, tmp_path, "c", 3, two_jobs["bases"])
    other = shared(export(job, tmp_path / "c-export").manifest)
    assert other.key != shared(two_jobs["manifests"][0]).key and not other.reused
    base = two_jobs["bases"] / shared(two_jobs["manifests"][0]).key
    check_adapter(base, Path(two_jobs["jobs"][0].run.output_root) / ONNX_ADAPTER_DIR / "fp32-cpu")
    with pytest.raises(TrainerError, match=r"was exported against base .* not this base"):
        check_adapter(base, Path(job.run.output_root) / ONNX_ADAPTER_DIR / "fp32-cpu")
