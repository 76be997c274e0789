"""The generated CRD: committed copies are current, and the schema is structural and documented."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from api_cases import REPO_ROOT
from pydantic import BaseModel

from kubetune_api import crd

SCHEMA = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_committed_crd_is_current() -> None:
    diffs = crd.check(REPO_ROOT)
    assert not diffs, "the committed CRD differs from the models; run hack/generate-crd\n" + "".join(diffs)


def test_rendered_crd_parses_back_to_the_same_object() -> None:
    text = crd.render_crd()
    assert text.startswith("# generated from operator/kubetune_api; do not edit")
    assert yaml.safe_load(text) == crd.build_crd()


def _walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}.*")


NODES = list(_walk(SCHEMA))


def test_every_property_has_a_description() -> None:
    # metadata's schema belongs to the API server, which refuses a description there.
    described = [(p, n) for p, n in NODES if p and p != ".metadata" and not p.endswith(("[]", ".*"))]
    missing = [p for p, node in described if not node.get("description")]
    assert not missing, f"properties without a description (kubectl explain shows nothing): {missing}"


def test_schema_is_structural() -> None:
    allowed_any_of = [{"type": "integer"}, {"type": "string"}]
    for path, node in NODES:
        where = path or "(root)"
        for key in ("$ref", "$defs", "allOf", "oneOf", "not", "title", "const", "examples"):
            assert key not in node, f"{where}: {key} is not allowed in a structural schema"
        if node.get("x-kubernetes-int-or-string"):
            assert node.get("anyOf") == allowed_any_of, where
            continue
        assert "anyOf" not in node, where
        assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}, where
        assert node.get("additionalProperties") is not False, where
        assert not ("properties" in node and "additionalProperties" in node), where
        assert node.get("uniqueItems") is not True, f"{where}: uniqueItems is forbidden"
        assert set(node.get("required", [])) <= set(node.get("properties", {})), where
        if isinstance(node.get("exclusiveMinimum"), bool) or "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True and "minimum" in node, where
        if node.get("type") == "array":
            assert "items" in node, where


def test_every_rule_has_a_message() -> None:
    rules = [(p, r) for p, node in NODES for r in node.get("x-kubernetes-validations", [])]
    assert len(rules) >= 15
    for path, rule in rules:
        assert set(rule) <= {"rule", "message", "reason", "fieldPath"}, path
        assert rule["message"] and len(rule["message"]) < 200, path


def test_strings_in_rules_are_bounded() -> None:
    """CEL cost estimates need maxLength on strings a rule reads with matches() or startsWith()."""
    for path, node in NODES:
        for rule in node.get("x-kubernetes-validations", []):
            if node.get("type") == "string" and "self.matches" in rule["rule"]:
                assert "maxLength" in node, path


def test_names_and_printer_columns() -> None:
    spec = crd.build_crd()["spec"]
    assert spec["group"] == "kubetune.dev" and spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "FineTuneJob",
        "listKind": "FineTuneJobList",
        "plural": "finetunejobs",
        "singular": "finetunejob",
        "shortNames": ["ftj"],
        "categories": ["kubetune"],
    }
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Phase": ".status.phase",
        "Method": ".spec.method",
        "Model": ".spec.baseModel.uri",
        "Progress%": ".status.progress.progressPercentage",
        "Loss": ".status.progress.loss",
        "Eval-Loss": ".status.progress.evalLoss",
        "Checkpoint": ".status.lastCheckpoint.step",
        "Age": ".metadata.creationTimestamp",
    }
    wide_only = {c["name"] for c in version["additionalPrinterColumns"] if c.get("priority") == 1}
    assert wide_only == {"Eval-Loss", "Checkpoint"}


def test_crd_defaults_match_the_models() -> None:
    spec_schema = SCHEMA["properties"]["spec"]["properties"]
    assert spec_schema["method"]["default"] == "lora"
    assert spec_schema["backoffLimit"]["default"] == 2
    assert spec_schema["export"]["default"] == {}
    targets = spec_schema["export"]["properties"]["targets"]
    # Unset: one target with the item defaults (int4 for cpu), filled in by the API server.
    assert targets["default"] == [{}]
    assert targets["items"]["properties"]["precision"]["default"] == "int4"
    assert targets["items"]["properties"]["executionProvider"]["default"] == "cpu"
    assert "default" not in spec_schema["lora"], "lora must stay unset unless given (method rules)"


def test_unsupported_unions_are_refused() -> None:
    class Bad(BaseModel):
        x: int | str

    schema = Bad.model_json_schema()
    with pytest.raises(crd.SchemaError, match="unions"):
        crd.to_structural(schema, {})


def test_cli_check_reports_a_stale_copy(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert crd.main(["--write", "--root", str(tmp_path)]) == 0
    assert crd.main(["--check", "--root", str(tmp_path)]) == 0
    stale = tmp_path / crd.CRD_PATHS[1]
    stale.write_text(stale.read_text().replace("ftj", "ft"))
    assert crd.main(["--check", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr()
    assert "-    - ft\n+    - ftj" in out.out
    assert "run hack/generate-crd" in out.err
