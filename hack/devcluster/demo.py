"""The main job end to end: SmolLM2-135M learns phrase -> tone with LoRA on the local cluster, is
exported to int4 ONNX, and the exported model answers a held-out phrase.

python -m devcluster.demo   (after `hack/cluster up`; `hack/demo` does everything)
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
from kubernetes.client.exceptions import ApiException

from . import model, release, seed, settings

NAMESPACE = "kubetune-demo"
MANIFEST = settings.REPO_ROOT / "examples" / "finetunejob-smollm2-tone.yaml"
TIMEOUT_S = 3600


def main() -> int:
    env = settings.cluster_env()
    api = config.new_client_from_config(env["KUBECONFIG"])
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    s3 = seed.s3_client(env)
    bucket = env["KUBETUNE_S3_BUCKET"]

    print("==> installing the operator with its Helm chart", flush=True)
    release.install()
    print("==> seeding S3: the SmolLM2 GGUF and the tone dataset", flush=True)
    gguf = model.smollm2_gguf()
    s3.upload_file(str(gguf), bucket, f"models/{gguf.name}")
    seed.upload_dataset(s3, bucket)
    seed.ensure_namespace(core, NAMESPACE, env)

    body = yaml.safe_load(MANIFEST.read_text())
    name = body["metadata"]["name"]
    # A fresh prefix: under the example's own one, an earlier demo's finished run would be reused.
    body["spec"]["output"]["uri"] += time.strftime("/demo-%Y%m%d-%H%M%S")
    delete_previous(custom, name)
    custom.create_namespaced_custom_object("kubetune.dev", "v1alpha1", NAMESPACE, "finetunejobs", body)
    print(f"==> applied {MANIFEST.relative_to(settings.REPO_ROOT)} as {NAMESPACE}/{name}", flush=True)

    status = watch(custom, name)
    print("\n==> final status")
    print(yaml.safe_dump({k: v for k, v in status.items() if k != "conditions"}, sort_keys=False))
    print("conditions:", ", ".join(f"{c['type']}={c['status']}" for c in status.get("conditions", [])))
    if status.get("phase") != "Succeeded":
        return 1
    print("\n==> artifacts")
    for artifact in status.get("artifacts", []):
        print(f"  {artifact['kind']:<12} {artifact['uri']}  {artifact.get('sizeBytes', '?')} bytes")
    onnx = next((a["uri"] for a in status.get("artifacts", []) if a["kind"] == "onnx"), None)
    if onnx:
        print("\n==> one generation from the exported ONNX model (onnxruntime-genai)")
        phrase = json.loads((seed.DATASET_DIR / "eval.jsonl").read_text().splitlines()[0])
        prompt = f"Phrase: {phrase['phrase']}\nTone:"
        answer = _generate(s3, onnx, prompt)
        print(f"  prompt:   {prompt!r}\n  answer:   {answer!r}\n  expected: {phrase['tone']!r}")
    return 0


def delete_previous(custom: client.CustomObjectsApi, name: str) -> None:
    try:
        custom.delete_namespaced_custom_object("kubetune.dev", "v1alpha1", NAMESPACE, "finetunejobs", name)
    except ApiException as e:
        if e.status != 404:
            raise
        return
    while True:
        try:
            custom.get_namespaced_custom_object("kubetune.dev", "v1alpha1", NAMESPACE, "finetunejobs", name)
        except ApiException:
            return
        time.sleep(1)


def watch(custom: client.CustomObjectsApi, name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
    last = None
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        obj: dict[str, Any] = custom.get_namespaced_custom_object(  # type: ignore[assignment]
            "kubetune.dev", "v1alpha1", namespace, "finetunejobs", name
        )
        status = obj.get("status") or {}
        progress = status.get("progress") or {}
        line = (
            f"{status.get('phase', '-'):<10}"
            f" step {progress.get('step', '-')}/{progress.get('totalSteps', '-')}"
            f"  {progress.get('progressPercentage', '-')}%  loss {progress.get('loss', '-')}"
            f"  eta {progress.get('estimatedRemainingSeconds', '-')}s"
        )
        if line != last:
            print(time.strftime("%H:%M:%S"), name, line, flush=True)
            last = line
        if status.get("phase") in ("Succeeded", "Failed"):
            return status
        time.sleep(2)
    raise SystemExit(f"the FineTuneJob did not finish within {TIMEOUT_S} s")


def download(s3: Any, uri: str, target: Path) -> Path:
    """Every object under the S3 folder `uri` into `target`, keeping relative paths."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    prefix = prefix.rstrip("/") + "/"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            path = target / obj["Key"][len(prefix) :]
            path.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(path))
    return target


def _generate(s3: Any, onnx_uri: str, prompt: str) -> str:
    import onnxruntime_genai as og

    with tempfile.TemporaryDirectory() as tmp:
        og_model = og.Model(str(download(s3, onnx_uri, Path(tmp))))
        tokenizer = og.Tokenizer(og_model)
        params = og.GeneratorParams(og_model)
        params.set_search_options(max_length=len(tokenizer.encode(prompt)) + 4, do_sample=False)
        generator = og.Generator(og_model, params)
        generator.append_tokens(tokenizer.encode(prompt))
        while not generator.is_done():
            generator.generate_next_token()
        tokens = generator.get_sequence(0)
        return tokenizer.decode(tokens)[len(prompt) :].strip()


if __name__ == "__main__":
    sys.exit(main())
