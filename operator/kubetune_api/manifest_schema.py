"""Generates the JSON Schema of the export's manifest from `kubetune_api.manifest.Manifest`.

    python -m kubetune_api.manifest_schema            # print the schema
    python -m kubetune_api.manifest_schema --write    # write the committed copy
    python -m kubetune_api.manifest_schema --check    # exit 1 with a diff if the committed copy is stale

The schema is pydantic's JSON Schema (2020-12) of the model, with an `$id` per schemaVersion. The
generator fails loudly rather than publish a schema that disagrees with the model: every `$ref` must
resolve, every keyword must be standard JSON Schema (no CRD extensions), and `schemaVersion` must be
pinned to the version the `$id` names. Pydantic's titles of fields ("Runid") are left out.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kubetune_api.manifest import SCHEMA_VERSION, Manifest

# Relative to the repository root.
SCHEMA_PATH = Path("docs") / "manifest.schema.json"
DIALECT = "https://json-schema.org/draft/2020-12/schema"
_VERSION_PREFIX = "kubetune.dev/manifest/"
TITLE = "Kubetune export manifest"
DESCRIPTION = (
    "manifest.json of an export: every folder of the bundle with the size and sha256 of each file, "
    "the export targets and their gate verdicts, the base model's digest and the libraries used. "
    "Readers ignore fields they do not know; a change an older reader would misread gets a new "
    "schemaVersion and a new $id."
)
COMMENT = (
    "generated from operator/kubetune_api/manifest.py; do not edit. "
    "Regenerate with hack/generate-manifest-schema after changing the model."
)

# What pydantic emits for the manifest's field types. Anything else (an extension such as
# x-kubernetes-validations, a typo in json_schema_extra) is refused rather than published.
_KNOWN_KEYWORDS = {
    "$ref",
    "$defs",
    "title",
    "description",
    "type",
    "enum",
    "const",
    "default",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "anyOf",
    "allOf",
    "oneOf",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "uniqueItems",
    "examples",
}
# Keywords whose value maps names to schemas, or lists schemas, or is one schema.
_SCHEMA_MAPS = {"properties", "$defs"}
_SCHEMA_LISTS = {"anyOf", "allOf", "oneOf"}
_SCHEMA_VALUES = {"items", "additionalProperties"}
_REF_PREFIX = "#/$defs/"


class SchemaError(ValueError):
    """The model's JSON Schema holds something this generator would not publish."""


def schema_id(version: str = SCHEMA_VERSION) -> str:
    """`kubetune.dev/manifest/v1` -> `https://kubetune.dev/schemas/manifest/v1.json`."""
    if not version.startswith(_VERSION_PREFIX) or "/" in version.removeprefix(_VERSION_PREFIX):
        raise SchemaError(f"schemaVersion {version!r} is not {_VERSION_PREFIX}<version>")
    return f"https://kubetune.dev/schemas/manifest/{version.removeprefix(_VERSION_PREFIX)}.json"


def _publish(node: Any, defs: dict[str, Any], path: str) -> dict[str, Any]:
    """The node as published: checked, and without pydantic's titles ("Runid" says less than the key)."""
    if not isinstance(node, dict):
        raise SchemaError(f"{path}: a schema must be an object, got {node!r}")
    out: dict[str, Any] = {}
    for key, value in node.items():
        where = f"{path}.{key}"
        if key not in _KNOWN_KEYWORDS:
            raise SchemaError(f"{where}: keyword {key!r} is not published in the manifest schema")
        if key == "title":
            continue
        if key == "$ref" and (
            not value.startswith(_REF_PREFIX) or value.removeprefix(_REF_PREFIX) not in defs
        ):
            raise SchemaError(f"{where}: {value!r} does not resolve to a definition")
        if key in _SCHEMA_MAPS:
            value = {name: _publish(sub, defs, f"{where}.{name}") for name, sub in value.items()}
        elif key in _SCHEMA_LISTS:
            value = [_publish(sub, defs, f"{where}[{index}]") for index, sub in enumerate(value)]
        elif key in _SCHEMA_VALUES and not isinstance(value, bool):
            value = _publish(value, defs, where)
        out[key] = value
    return out


def build_schema() -> dict[str, Any]:
    """The manifest's JSON Schema, checked (SchemaError on anything that would publish it wrong)."""
    raw = Manifest.model_json_schema(by_alias=True, mode="validation")
    generated = _publish(raw, raw.get("$defs", {}), "(root)")
    version = generated.get("properties", {}).get("schemaVersion", {})
    if version.get("const") != SCHEMA_VERSION:
        raise SchemaError(
            f"schemaVersion is not pinned to {SCHEMA_VERSION!r} (got {version!r}): the Literal of "
            "Manifest.schema_version and SCHEMA_VERSION must name the same version"
        )
    # The document's own keywords first; the model's title and docstring give way to these.
    header = {"$schema": DIALECT, "$id": schema_id(), "$comment": COMMENT}
    body = {k: v for k, v in generated.items() if k != "description"}
    return {**header, "title": TITLE, "description": DESCRIPTION, **body}


def render_schema() -> str:
    # Field order is the model's (readable next to manifest.py); pydantic emits it deterministically.
    return json.dumps(build_schema(), indent=2, ensure_ascii=False) + "\n"


def check(root: Path) -> str:
    """A unified diff of the committed copy against the generated schema (empty when current)."""
    path = root / SCHEMA_PATH
    actual = path.read_text() if path.exists() else ""
    return "".join(
        difflib.unified_diff(
            actual.splitlines(keepends=True),
            render_schema().splitlines(keepends=True),
            fromfile=f"{SCHEMA_PATH} (committed)",
            tofile=f"{SCHEMA_PATH} (generated)",
        )
    )


def write(root: Path) -> None:
    text = render_schema()  # rendered first: a SchemaError leaves the committed copy untouched
    path = root / SCHEMA_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kubetune_api.manifest_schema", description=__doc__.split("\n")[0]
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write the schema file under --root")
    mode.add_argument("--check", action="store_true", help="exit 1 with a diff if the schema file is stale")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="repository root (default: cwd)")
    args = parser.parse_args(argv)

    if args.write:
        write(args.root)
        print(f"wrote {SCHEMA_PATH}", file=sys.stderr)
        return 0
    if args.check:
        diff = check(args.root)
        if diff:
            sys.stdout.write(diff)
            print(
                "the committed manifest schema is stale: run hack/generate-manifest-schema", file=sys.stderr
            )
            return 1
        return 0
    sys.stdout.write(render_schema())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
