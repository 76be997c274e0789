"""The manifest's JSON Schema: the committed copy is current, it agrees with the model on a sample
manifest, and the generator refuses what it must not publish."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import pytest
from api_cases import REPO_ROOT
from pydantic import BaseModel, Field

from kubetune_api import manifest_schema
from kubetune_api.manifest import SCHEMA_VERSION, Manifest

SCHEMA = manifest_schema.build_schema()
DIGEST = "ab" * 32
_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
    "integer": int,
    "number": (int, float),
}
# Annotations say what a value means, not what it may be.
_ANNOTATIONS = {"$schema", "$id", "$comment", "$defs", "title", "description", "default"}
_ASSERTIONS = {"$ref", "type", "anyOf", "enum", "const", "pattern", "minimum", "required", "properties"} | {
    "additionalProperties",
    "items",
}


def schema_errors(value: Any, node: dict[str, Any], path: str = "$") -> list[str]:
    """Where `value` breaks `node`: a validator of the keywords the manifest schema uses, so the test
    needs no jsonschema dependency. An unknown keyword fails the test instead of being skipped."""
    errors: list[str] = []
    for key, expected in node.items():
        if key not in _ASSERTIONS | _ANNOTATIONS:
            pytest.fail(f"the test's validator does not know the keyword {key!r} at {path}")
        if key == "$ref":
            errors += schema_errors(value, SCHEMA["$defs"][expected.removeprefix("#/$defs/")], path)
        elif key == "type":
            # bool is an int in Python, never in JSON.
            if not isinstance(value, _TYPES[expected]) or (expected != "boolean" and isinstance(value, bool)):
                errors.append(f"{path}: {value!r} is not of type {expected}")
        elif key == "anyOf":
            if all(schema_errors(value, branch, path) for branch in expected):
                errors.append(f"{path}: {value!r} matches none of {expected}")
        elif (key == "enum" and value not in expected) or (key == "const" and value != expected):
            errors.append(f"{path}: {value!r} is not {expected!r}")
        elif key == "pattern" and isinstance(value, str) and not re.search(expected, value):
            errors.append(f"{path}: {value!r} does not match {expected}")
        elif key == "minimum" and isinstance(value, int | float) and value < expected:
            errors.append(f"{path}: {value!r} is below {expected}")
        elif key == "required" and isinstance(value, dict):
            errors += [f"{path}: {name} is required" for name in expected if name not in value]
        elif key == "properties" and isinstance(value, dict):
            for name, sub in expected.items():
                if name in value:
                    errors += schema_errors(value[name], sub, f"{path}.{name}")
        elif key == "additionalProperties" and isinstance(value, dict):
            extra = {k: v for k, v in value.items() if k not in node.get("properties", {})}
            if expected is False and extra:
                errors.append(f"{path}: unexpected {sorted(extra)}")
            elif isinstance(expected, dict):
                for name, sub_value in extra.items():
                    errors += schema_errors(sub_value, expected, f"{path}.{name}")
        elif key == "items" and isinstance(value, list):
            for index, item in enumerate(value):
                errors += schema_errors(item, expected, f"{path}[{index}]")
    return errors


def sample_manifest() -> Manifest:
    """A manifest with every optional part present: an adapter target with a shared base."""
    gate = {"result": "Passed", "failures": []}
    return Manifest.model_validate(
        {
            "schemaVersion": SCHEMA_VERSION,
            "name": "tone",
            "namespace": "team-a",
            "runId": "r-1a2b3c",
            "specHash": DIGEST,
            "createdAt": "2026-01-02T03:04:05Z",
            "promoted": True,
            "baseModel": {"uri": "s3://models/smollm2/", "revision": "main", "sha256": DIGEST},
            "method": "lora",
            "lora": {"r": 8, "alpha": 16, "targetModules": ["q_proj", "v_proj"]},
            "dataset": {"trainUri": "s3://data/train.jsonl", "sha256": {"train.jsonl": DIGEST}},
            "export": {"onnx": {"precision": "int4"}, "timings": {"build": 12.5}},
            "libraries": {"torch": "2.5.1", "onnxruntime-genai": "0.6.0"},
            "metrics": {"evalLoss": 0.42, "steps": 30},
            "gate": gate,
            "targets": [
                {
                    "name": "int4-cpu",
                    "settings": {"precision": "int4", "executionProvider": "cpu"},
                    "metrics": {"exactMatch": 0.9},
                    "gate": gate,
                    "sharedBase": {"key": DIGEST, "uri": "s3://out/bases/" + DIGEST, "reused": False},
                }
            ],
            "artifacts": [
                {
                    "kind": "onnxAdapter",
                    "uri": "s3://out/runs/tone/onnx-adapter",
                    "target": "int4-cpu",
                    "files": [
                        {
                            "path": "model.onnx_adapter",
                            "uri": "s3://out/runs/tone/onnx-adapter/model.onnx_adapter",
                            "size": 1234,
                            "sha256": DIGEST,
                        }
                    ],
                }
            ],
        }
    )


def test_committed_schema_is_current() -> None:
    diff = manifest_schema.check(REPO_ROOT)
    assert not diff, (
        "docs/manifest.schema.json differs from the model; run hack/generate-manifest-schema\n" + diff
    )


def test_schema_names_its_dialect_id_and_version() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA["$id"] == "https://kubetune.dev/schemas/manifest/v1.json"
    assert SCHEMA["title"] and SCHEMA["description"]
    assert SCHEMA["properties"]["schemaVersion"]["const"] == SCHEMA_VERSION
    assert json.loads(manifest_schema.render_schema()) == SCHEMA


def test_required_fields_are_the_models_fields_without_defaults() -> None:
    required = {field.alias or name for name, field in Manifest.model_fields.items() if field.is_required()}
    assert set(SCHEMA["required"]) == required
    assert {"artifacts", "targets", "gate", "baseModel", "libraries"} <= required
    assert set(SCHEMA["$defs"]["FileRecord"]["required"]) == {"path", "uri", "size", "sha256"}


def test_a_written_manifest_validates_and_reads_back() -> None:
    manifest = sample_manifest()
    document = manifest.model_dump(mode="json", by_alias=True)
    assert document["schemaVersion"] == SCHEMA_VERSION
    assert schema_errors(document, SCHEMA) == []
    assert Manifest.model_validate(document) == manifest
    # Every key the model writes is one the schema describes.
    assert set(document) == set(SCHEMA["properties"])


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d.pop("artifacts"), "artifacts is required"),
        (lambda d: d.update(schemaVersion="kubetune.dev/manifest/v2"), "is not 'kubetune.dev/manifest/v1'"),
        (lambda d: d["artifacts"][0]["files"][0].update(sha256="XYZ"), "does not match"),
        (lambda d: d["artifacts"][0]["files"][0].update(size=-1), "is below 0"),
        (lambda d: d["artifacts"][0].update(kind="weights"), "'weights' is not"),
        (lambda d: d["libraries"].update(torch=2), "is not of type string"),
    ],
    ids=["no-artifacts", "schema-version", "sha256", "size", "kind", "library-version"],
)
def test_schema_and_model_refuse_the_same_documents(edit: Any, expected: str) -> None:
    document = sample_manifest().model_dump(mode="json", by_alias=True)
    edit(document)
    assert any(expected in error for error in schema_errors(document, SCHEMA)), schema_errors(
        document, SCHEMA
    )
    with pytest.raises(ValueError):
        Manifest.model_validate(document)


def test_unknown_fields_are_allowed_as_the_reader_ignores_them() -> None:
    document = sample_manifest().model_dump(mode="json", by_alias=True)
    document["addedLater"] = {"x": 1}
    assert schema_errors(document, SCHEMA) == []
    assert Manifest.model_validate(document) == sample_manifest()


def _manifest_with_field_extra(extra: dict[str, Any]) -> type[BaseModel]:
    class Fake(BaseModel):
        schemaVersion: Literal["kubetune.dev/manifest/v1"] = SCHEMA_VERSION
        name: str = Field(json_schema_extra=extra)

    return Fake


def test_generator_refuses_keywords_it_would_not_publish(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = _manifest_with_field_extra({"x-kubernetes-validations": [{"rule": "true"}]})
    monkeypatch.setattr(manifest_schema, "Manifest", bad)
    with pytest.raises(manifest_schema.SchemaError, match="x-kubernetes-validations"):
        manifest_schema.build_schema()


def test_generator_refuses_an_unpinned_schema_version(monkeypatch: pytest.MonkeyPatch) -> None:
    class Unpinned(BaseModel):
        schemaVersion: str = SCHEMA_VERSION

    monkeypatch.setattr(manifest_schema, "Manifest", Unpinned)
    with pytest.raises(manifest_schema.SchemaError, match="not pinned"):
        manifest_schema.build_schema()


def test_schema_id_follows_the_version() -> None:
    assert (
        manifest_schema.schema_id("kubetune.dev/manifest/v2")
        == "https://kubetune.dev/schemas/manifest/v2.json"
    )
    with pytest.raises(manifest_schema.SchemaError):
        manifest_schema.schema_id("example.com/manifest/v1")


def test_cli_check_reports_a_stale_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert manifest_schema.main(["--check", "--root", str(tmp_path)]) == 1
    assert manifest_schema.main(["--write", "--root", str(tmp_path)]) == 0
    assert manifest_schema.main(["--check", "--root", str(tmp_path)]) == 0
    stale = tmp_path / manifest_schema.SCHEMA_PATH
    stale.write_text(stale.read_text().replace('"sha256"', '"sha"', 1))
    capsys.readouterr()
    assert manifest_schema.main(["--check", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr()
    assert '-        "sha": {' in out.out and '+        "sha256": {' in out.out
    assert "run hack/generate-manifest-schema" in out.err


def test_a_refused_schema_leaves_the_committed_copy_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert manifest_schema.main(["--write", "--root", str(tmp_path)]) == 0
    before = (tmp_path / manifest_schema.SCHEMA_PATH).read_text()
    monkeypatch.setattr(manifest_schema, "Manifest", _manifest_with_field_extra({"x-bad": 1}))
    with pytest.raises(manifest_schema.SchemaError):
        manifest_schema.main(["--write", "--root", str(tmp_path)])
    assert (tmp_path / manifest_schema.SCHEMA_PATH).read_text() == before
