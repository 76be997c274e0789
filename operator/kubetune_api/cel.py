"""CEL validation rules that live beside the pydantic models they guard.

Each `Cel` carries the rule the API server runs (emitted as `x-kubernetes-validations`) and, where
possible, a Python twin with the same meaning and the same message, so a bad spec is rejected with
identical words by `kubectl apply` and by `FineTuneJob.from_k8s`.

Two ways to attach one:
- on a field type: `Annotated[str, Cel.regex(...)]` (the rule's `self` is the field's value);
- on a model: `cel_rules: ClassVar[tuple[Cel, ...]] = (...)` (the rule's `self` is the object).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

# The `reason` values the API server accepts; they pick the error's wording ("Required value", ...).
Reason = Literal["FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", "FieldValueDuplicate"]

VALIDATIONS_KEY = "x-kubernetes-validations"


@dataclass(frozen=True)
class Cel:
    rule: str
    message: str
    # Python twin of `rule`: True when the value is valid. None for transition rules (they compare
    # with `oldSelf`, which only the API server has).
    check: Callable[[Any], bool] | None
    reason: Reason | None = None
    # Relative path of the field to blame (e.g. ".lora"); makes the server's error point at it.
    field_path: str | None = None

    @classmethod
    def regex(cls, pattern: str, message: str) -> Cel:
        """A string must match `pattern` (RE2 and Python `re` agree on the subset used here)."""
        if "'" in pattern or "\\" in pattern:
            # Keeps the CEL string literal free of escapes, so both engines read the same pattern.
            raise ValueError(f"use character classes instead of quotes or backslashes: {pattern}")
        compiled = re.compile(pattern)
        return cls(f"self.matches('{pattern}')", message, lambda v: compiled.search(v) is not None)

    @classmethod
    def immutable(cls, message: str) -> Cel:
        return cls("self == oldSelf", message, None)

    def to_k8s(self) -> dict[str, str]:
        out = {"rule": self.rule, "message": self.message}
        if self.reason:
            out["reason"] = self.reason
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out

    def validate(self, value: Any) -> Any:
        if self.check is not None and not self.check(value):
            raise PydanticCustomError("cel_rule", "{message}", {"message": self.message})
        return value

    # Used as `Annotated[...]` metadata: validate after the inner type, and add the rule to the schema.
    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.validate, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        # A `$ref` gets the rule as a sibling; the CRD generator merges siblings into the target.
        json_schema.setdefault(VALIDATIONS_KEY, []).append(self.to_k8s())
        return json_schema


def add_model_rules(schema: dict[str, Any], model: type) -> None:
    """`json_schema_extra` hook: emit a model's `cel_rules` as x-kubernetes-validations."""
    rules: tuple[Cel, ...] = getattr(model, "cel_rules", ())
    if rules:
        schema.setdefault(VALIDATIONS_KEY, []).extend(r.to_k8s() for r in rules)


def check_model_rules(obj: Any) -> None:
    for rule in getattr(type(obj), "cel_rules", ()):
        rule.validate(obj)
