"""Files to rows: .jsonl, .json (a top-level list of objects), .csv (a header row) and .parquet;
.jsonl, .json and .csv may be gzipped (.gz)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from kubetune_trainer.data.types import Row
from kubetune_trainer.errors import data_error

if TYPE_CHECKING:
    pass

log = logging.getLogger("kubetune_trainer.data")

FILE_TYPES = (".jsonl", ".json", ".csv", ".parquet")


def file_type(path: Path) -> tuple[str, bool]:
    """(extension, gzipped) of a dataset file; an unknown type is a data error naming the file."""
    name = Path(path).name.lower()
    gzipped = name.endswith(".gz")
    stem = name.removesuffix(".gz")
    for ext in FILE_TYPES:
        if stem.endswith(ext) and not (gzipped and ext == ".parquet"):
            return ext, gzipped
    raise data_error(
        f"dataset {Path(path).name}: unknown file type; use .jsonl, .json, .csv or .parquet "
        "(.jsonl, .json and .csv may be .gz)"
    )


def read_rows(path: Path) -> list[Row]:
    """The rows of a dataset file, by its extension; row N (1-based) is the N-th record."""
    path = Path(path)
    ext, gzipped = file_type(path)
    if ext == ".parquet":
        rows = _read_parquet(path)
    else:
        try:
            raw = path.read_bytes()
            text = (gzip.decompress(raw) if gzipped else raw).decode("utf-8")
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise data_error(f"cannot read dataset {path.name}: {exc}") from exc
        reader = {".jsonl": _parse_jsonl, ".json": _parse_json, ".csv": _parse_csv}[ext]
        rows = reader(text, path.name)
    if not rows:
        raise data_error(f"dataset {path.name} has no rows")
    return rows


def read_jsonl(path: Path) -> list[Row]:
    """The JSON objects of a JSONL file; blank lines are skipped, so row N is the N-th object."""
    return read_rows(path)


def _parse_jsonl(text: str, name: str) -> list[Row]:
    rows: list[Row] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise data_error(f"{name} line {number}: invalid JSON: {exc.msg}") from exc
        if not isinstance(row, dict):
            raise data_error(f"{name} line {number}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def _parse_json(text: str, name: str) -> list[Row]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise data_error(f"{name}: invalid JSON at line {exc.lineno}: {exc.msg}") from exc
    if not isinstance(data, list):
        raise data_error(
            f"{name}: a .json dataset must be a top-level list of objects, got {type(data).__name__}"
        )
    for number, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise data_error(f"{name} row {number}: expected a JSON object, got {type(row).__name__}")
    return data


def _parse_csv(text: str, name: str) -> list[Row]:
    reader = csv.DictReader(io.StringIO(text, newline=""), restkey="\0extra")
    rows: list[Row] = []
    try:
        if reader.fieldnames is not None and any(not f for f in reader.fieldnames):
            raise data_error(f"{name}: the CSV header row has an empty column name")
        for number, row in enumerate(reader, start=1):
            if "\0extra" in row:
                raise data_error(f"{name} row {number}: more values than header columns")
            rows.append(row)
    except csv.Error as exc:
        raise data_error(f"{name} line {reader.line_num}: bad CSV: {exc}") from exc
    return rows


def _read_parquet(path: Path) -> list[Row]:
    import pyarrow.parquet as pq

    try:
        return list(pq.read_table(path).to_pylist())
    except Exception as exc:  # pyarrow raises several types (ArrowInvalid, OSError, ...)
        raise data_error(f"cannot read dataset {path.name} as Parquet: {exc}") from exc


# --- formats -------------------------------------------------------------------------------------
