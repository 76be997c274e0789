"""Generates the CRDs (FineTuneJob, FineTuneSweep) from the pydantic models.

    python -m kubetune_api.crd            # print the CRDs' YAML
    python -m kubetune_api.crd --write    # write the committed copies
    python -m kubetune_api.crd --check    # exit 1 with a diff if a committed copy is stale

Pydantic emits JSON Schema (2020-12); the API server wants a *structural* OpenAPI v3 schema. The
conversion inlines $refs, drops what structural schemas forbid or do not know (title, $defs,
`additionalProperties: false`, null defaults), and fails loudly on anything it does not understand,
so a model change can never produce a CRD that the API server would reject or silently mangle.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubetune_api import sweep, v1alpha1
from kubetune_api.cel import VALIDATIONS_KEY

HEADER = (
    "# generated from operator/kubetune_api; do not edit.\n"
    "# Regenerate with hack/generate-crd after changing the models.\n"
)

# Keywords passed through unchanged (after their children are converted).
_PLAIN_KEYWORDS = {
    "description",
    "type",
    "format",
    "enum",
    "default",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "required",
    "nullable",
    VALIDATIONS_KEY,
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-embedded-resource",
}
_DROPPED_KEYWORDS = {"title", "$defs"}


class SchemaError(ValueError):
    """The models use a JSON Schema construct that has no structural OpenAPI equivalent here."""


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    # The field's own keywords (description, default, rules) win over the referenced model's; CEL rules
    # of both apply, so those lists are concatenated.
    out = dict(base)
    for key, value in overlay.items():
        if key == VALIDATIONS_KEY and key in out:
            out[key] = [*out[key], *value]
        else:
            out[key] = value
    return out


def to_structural(
    node: dict[str, Any], defs: dict[str, Any], path: str = "", _seen: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Convert one pydantic JSON Schema node (and its children) to structural OpenAPI v3."""
    node = dict(node)
    ref = node.pop("$ref", None)
    all_of = node.pop("allOf", None)
    if all_of is not None:
        if len(all_of) != 1 or ref is not None:
            raise SchemaError(f"{path}: allOf with several schemas is not supported")
        node = {**all_of[0], **node}
        ref = node.pop("$ref", None)
    if ref is not None:
        name = ref.rsplit("/", 1)[-1]
        if name in _seen:
            raise SchemaError(f"{path}: recursive model {name} cannot be expressed in a CRD")
        target = to_structural(defs[name], defs, path, (*_seen, name))
        return _merge(target, to_structural(node, defs, path, _seen))

    any_of = node.pop("anyOf", None)
    if any_of is not None and not node.get("x-kubernetes-int-or-string"):
        # Optional[X] is anyOf [X, null]. We drop the null branch instead of emitting `nullable`: the API
        # server then prunes an explicit null, so `has(self.x)` in CEL is false exactly when Python sees None.
        branches = [b for b in any_of if b != {"type": "null"}]
        if len(branches) != 1:
            raise SchemaError(f"{path}: unions other than Optional[X] are not supported")
        if node.get("default", ...) is None:
            del node["default"]
        return _merge(to_structural(branches[0], defs, path, _seen), to_structural(node, defs, path, _seen))

    out: dict[str, Any] = {}
    if any_of is not None:
        out["anyOf"] = copy.deepcopy(any_of)
    for key, value in node.items():
        if key in _DROPPED_KEYWORDS:
            continue
        if key == "properties":
            out[key] = {
                name: to_structural(sub, defs, f"{path}.{name}", _seen) for name, sub in value.items()
            }
        elif key == "items":
            out[key] = to_structural(value, defs, f"{path}[]", _seen)
        elif key == "additionalProperties":
            if value is False:
                continue  # extra="forbid": structural schemas forbid it beside properties; pruning covers it
            if value is True:
                raise SchemaError(f"{path}: free-form objects need an explicit schema")
            out[key] = to_structural(value, defs, f"{path}.*", _seen)
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            # JSON Schema 2020-12 numbers become OpenAPI v3.0 bound + boolean.
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "const":
            out["enum"] = [value]
        elif key == "default" and value is None:
            continue
        elif key in _PLAIN_KEYWORDS:
            out[key] = copy.deepcopy(value)
        else:
            raise SchemaError(f"{path}: JSON Schema keyword {key!r} has no structural equivalent")
    return out


def _model_schema(model: type[Any]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return to_structural(schema, schema.get("$defs", {}))


def openapi_schema(kind: CrdKind | None = None) -> dict[str, Any]:
    """The structural schema of a whole object (default: the FineTuneJob)."""
    kind = kind or FINETUNEJOB
    model = kind.model
    return {
        "description": " ".join((model.__doc__ or "").split()),
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "description": "APIVersion of this representation of the object (kubetune.dev/v1alpha1).",
                "type": "string",
            },
            "kind": {"description": f"Kind of the object ({kind.kind}).", "type": "string"},
            # The API server owns metadata's schema; a CRD may only say that it is an object.
            "metadata": {"type": "object"},
            "spec": _model_schema(model.model_fields["spec"].annotation),
            "status": _model_schema(model.model_fields["status"].annotation),
        },
        VALIDATIONS_KEY: [rule.to_k8s() for rule in model.cel_rules],
    }


FINETUNEJOB_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Method", "type": "string", "jsonPath": ".spec.method"},
    {"name": "Model", "type": "string", "jsonPath": ".spec.baseModel.uri"},
    {
        "name": "Progress%",
        "type": "integer",
        "jsonPath": ".status.progress.progressPercentage",
        "description": "Training progress in percent.",
    },
    {"name": "Loss", "type": "number", "jsonPath": ".status.progress.loss"},
    # -o wide only (priority 1): the latest evaluation and the step a lost pod would resume from.
    {
        "name": "Eval-Loss",
        "type": "number",
        "jsonPath": ".status.progress.evalLoss",
        "priority": 1,
        "description": "Latest evaluation loss.",
    },
    {
        "name": "Checkpoint",
        "type": "integer",
        "jsonPath": ".status.lastCheckpoint.step",
        "priority": 1,
        "description": "Step of the newest checkpoint in S3.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


SWEEP_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {
        "name": "Done",
        "type": "integer",
        "jsonPath": ".status.trialsDone",
        "description": "Finished trials (succeeded, failed or early stopped).",
    },
    {"name": "Total", "type": "integer", "jsonPath": ".status.trialsTotal", "description": "Trials."},
    {"name": "Best", "type": "string", "jsonPath": ".status.bestTrial.name", "description": "Best trial."},
    {
        "name": "Metric",
        "type": "number",
        "jsonPath": ".status.bestTrial.metric",
        "description": "The best trial's objective metric.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


@dataclass(frozen=True)
class CrdKind:
    """One generated CRD: its names, model and printer columns."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    categories: tuple[str, ...]
    model: Any  # the object's pydantic model (spec, status and cel_rules)
    columns: list[dict[str, Any]]

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{v1alpha1.GROUP}"

    @property
    def paths(self) -> tuple[Path, Path]:
        """Relative to the repository root; the chart carries an identical copy."""
        file = f"{v1alpha1.GROUP}_{self.plural}.yaml"
        return Path("crds") / file, Path("charts/kubetune/crds") / file


FINETUNEJOB = CrdKind(
    v1alpha1.KIND,
    v1alpha1.PLURAL,
    v1alpha1.SINGULAR,
    v1alpha1.SHORT_NAMES,
    v1alpha1.CATEGORIES,
    v1alpha1.FineTuneJob,
    FINETUNEJOB_COLUMNS,
)
FINETUNESWEEP = CrdKind(
    sweep.SWEEP_KIND,
    sweep.SWEEP_PLURAL,
    sweep.SWEEP_SINGULAR,
    sweep.SWEEP_SHORT_NAMES,
    sweep.SWEEP_CATEGORIES,
    sweep.FineTuneSweep,
    SWEEP_COLUMNS,
)
KINDS = (FINETUNEJOB, FINETUNESWEEP)
# The FineTuneJob's, kept under their old names.
CRD_NAME = FINETUNEJOB.crd_name
CRD_PATHS = FINETUNEJOB.paths
PRINTER_COLUMNS = FINETUNEJOB_COLUMNS
ALL_CRD_PATHS = tuple(path for kind in KINDS for path in kind.paths)


def build_crd(kind: CrdKind | None = None) -> dict[str, Any]:
    kind = kind or FINETUNEJOB
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.crd_name},
        "spec": {
            "group": v1alpha1.GROUP,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": list(kind.categories),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": v1alpha1.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": kind.columns,
                    "schema": {"openAPIV3Schema": openapi_schema(kind)},
                }
            ],
        },
    }


def render_crd(kind: CrdKind | None = None) -> str:
    # sort_keys gives a stable order whatever the dict insertion order; a wide line keeps rules unfolded.
    body = yaml.safe_dump(
        build_crd(kind), sort_keys=True, default_flow_style=False, width=120, allow_unicode=True
    )
    return HEADER + "---\n" + body


def check(root: Path) -> list[str]:
    """Unified diffs of every committed copy that differs from its generated CRD (empty when current)."""
    diffs = []
    for kind in KINDS:
        expected = render_crd(kind)
        for rel in kind.paths:
            path = root / rel
            actual = path.read_text() if path.exists() else ""
            if actual != expected:
                diffs.append(
                    "".join(
                        difflib.unified_diff(
                            actual.splitlines(keepends=True),
                            expected.splitlines(keepends=True),
                            fromfile=f"{rel} (committed)",
                            tofile=f"{rel} (generated)",
                        )
                    )
                )
    return diffs


def write(root: Path) -> None:
    for kind in KINDS:
        text = render_crd(kind)
        for rel in kind.paths:
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubetune_api.crd", description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write the CRD files under --root")
    mode.add_argument("--check", action="store_true", help="exit 1 with a diff if a CRD file is stale")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="repository root (default: cwd)")
    args = parser.parse_args(argv)

    if args.write:
        write(args.root)
        for rel in ALL_CRD_PATHS:
            print(f"wrote {rel}", file=sys.stderr)
        return 0
    if args.check:
        diffs = check(args.root)
        if diffs:
            sys.stdout.write("".join(diffs))
            print("a committed CRD is stale: run hack/generate-crd", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write("".join(render_crd(kind) for kind in KINDS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
