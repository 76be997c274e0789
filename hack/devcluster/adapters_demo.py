"""Two tasks, one base: two FineTuneJobs on SmolLM2-135M-Instruct (phrase -> tone, request -> intent)
export swappable adapters for one shared int4 base ONNX model, and onnxruntime-genai switches between
them per request, scored on every held-out row of both tasks.

python -m devcluster.adapters_demo   (after `hack/cluster up`; `hack/adapters-demo` does everything)
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

from . import model, release, seed, settings
from .demo import NAMESPACE, delete_previous, download, watch

EXAMPLES = settings.REPO_ROOT / "examples"
# task -> (example, prompt template, answer field)
TASKS = {
    "tone": ("finetunejob-smollm2-tone.yaml", "Phrase: {phrase}\nTone:", "tone"),
    "intent": ("finetunejob-smollm2-intent.yaml", "Request: {request}\nIntent:", "intent"),
}


def apply_both(custom: client.CustomObjectsApi, s3: Any, bucket: str) -> dict[str, dict[str, Any]]:
    gguf = model.smollm2_gguf()
    s3.upload_file(str(gguf), bucket, f"models/{gguf.name}")
    bodies = {}
    for task, (example, _, _) in TASKS.items():
        seed.upload_dataset(s3, bucket, task)
        body = yaml.safe_load((EXAMPLES / example).read_text())
        # A fresh run prefix; the shared base stays where the examples put it, so a base an earlier
        # demo built is found and reused.
        body["spec"]["output"]["uri"] += time.strftime("/demo-%Y%m%d-%H%M%S")
        delete_previous(custom, body["metadata"]["name"])
        custom.create_namespaced_custom_object("kubetune.dev", "v1alpha1", NAMESPACE, "finetunejobs", body)
        print(f"==> applied examples/{example} as {NAMESPACE}/{body['metadata']['name']}", flush=True)
        bodies[task] = body
    return bodies


def artifact_uri(status: dict[str, Any], kind: str) -> str:
    return str(next(a["uri"] for a in status["artifacts"] if a["kind"] == kind))


def switch_per_request(base: Path, adapters_dir: dict[str, Path]) -> dict[str, float]:
    """Every held-out row of both tasks, alternating tasks request by request, each with its adapter."""
    import onnxruntime_genai as og

    from kubetune_trainer.shared_base import check_adapter

    og_model = og.Model(str(base))
    tokenizer = og.Tokenizer(og_model)
    adapters = og.Adapters(og_model)
    for task, folder in adapters_dir.items():
        check_adapter(base, folder)  # refuses an adapter exported against another base
        adapters.load(str(folder / "adapter.onnx_adapter"), task)
    rows = {
        task: [json.loads(x) for x in (seed.DATASETS_DIR / task / "eval.jsonl").read_text().splitlines()]
        for task in TASKS
    }
    correct = dict.fromkeys(TASKS, 0)
    for i in range(max(len(r) for r in rows.values())):
        for task, (_, template, field) in TASKS.items():
            if i >= len(rows[task]):
                continue
            row = rows[task][i]
            ids = tokenizer.encode(template.format(**row))
            params = og.GeneratorParams(og_model)
            params.set_search_options(max_length=len(ids) + 4, do_sample=False)
            generator = og.Generator(og_model, params)
            generator.set_active_adapter(adapters, task)
            generator.append_tokens(ids)
            while not generator.is_done():
                generator.generate_next_token()
            answer = tokenizer.decode(generator.get_sequence(0)[len(ids) :]).strip()
            correct[task] += answer.split()[0].strip(".,").lower() == row[field] if answer else 0
            if i < 2:
                print(f"  [{task:>6}] {template.format(**row)!r} -> {answer!r} (expected {row[field]!r})")
    return {task: correct[task] / len(rows[task]) for task in TASKS}


def main() -> int:
    env = settings.cluster_env()
    api = config.new_client_from_config(env["KUBECONFIG"])
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    s3, bucket = seed.s3_client(env), env["KUBETUNE_S3_BUCKET"]
    print("==> installing the operator with its Helm chart", flush=True)
    release.install()
    seed.ensure_namespace(core, NAMESPACE, env)
    bodies = apply_both(custom, s3, bucket)
    statuses = {task: watch(custom, body["metadata"]["name"]) for task, body in bodies.items()}
    if any(s.get("phase") != "Succeeded" for s in statuses.values()):
        print(yaml.safe_dump(statuses, sort_keys=False))
        return 1
    print("\n==> export targets")
    for task, status in statuses.items():
        for target in status.get("exportTargets", []):
            print(f"  {task:>6} {target['name']}: gate {target['gate']}, {json.dumps(target['metrics'])}")
    bases = {artifact_uri(s, "onnxBase") for s in statuses.values()}
    print(f"\n==> one shared base for both: {sorted(bases)}")
    with tempfile.TemporaryDirectory() as tmp:
        base = download(s3, bases.pop(), Path(tmp) / "base")
        adapters = {
            task: download(s3, artifact_uri(s, "onnxAdapter"), Path(tmp) / task)
            for task, s in statuses.items()
        }
        print("\n==> one onnxruntime-genai model, the adapter switched per request")
        accuracy = switch_per_request(base, adapters)
    for task, value in accuracy.items():
        print(f"  {task:>6}: held-out exact match {value:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
