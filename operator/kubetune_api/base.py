"""The base of every API model and the field types the spec shares."""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue

from kubetune_api.cel import Cel, add_model_rules, check_model_rules


class ApiModel(BaseModel):
    """Base of every API model: frozen, camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra=add_model_rules,
    )
    cel_rules: ClassVar[tuple[Cel, ...]] = ()

    @model_validator(mode="after")
    def _check_cel_rules(self) -> Self:
        check_model_rules(self)
        return self

    def to_k8s(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase keys, unset fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class LenientModel(ApiModel):
    # For status and metadata: the operator and the trainer both write status, and the API server adds
    # metadata fields; tolerate what this version does not know.
    model_config = ConfigDict(extra="ignore")


def nested_default(model: type[ApiModel], description: str) -> Any:
    # `default: {}` in the CRD makes the API server fill in the nested defaults, so `kubectl get -o yaml`
    # shows the effective settings; pydantic does the same through the factory. The server also checks
    # the model's CEL rules against the bare `{}`, so those rules must guard fields with has().
    return Field(default_factory=model, description=description, json_schema_extra={"default": {}})


# --- shared field types -------------------------------------------------------------------------------

_S3_BUCKET = "[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
_PVC_CLAIM = "[a-z0-9]([-a-z0-9.]*[a-z0-9])?"
_DNS_SUBDOMAIN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

SourceUri = Annotated[
    str,
    Field(min_length=2, max_length=1024),
    Cel.regex(
        f"^(s3://{_S3_BUCKET}/.+|pvc://{_PVC_CLAIM}/.+|/.+)$",
        "must be s3://bucket/key, pvc://claim/path or an absolute path inside the trainer container",
    ),
]
# s3://bucket or s3://bucket/prefix: where a job may write.
S3_PREFIX_PATTERN = f"^s3://{_S3_BUCKET}(/.*)?$"
OutputUri = Annotated[
    str,
    Field(min_length=8, max_length=1024),
    Cel.regex(S3_PREFIX_PATTERN, "output.uri must be an S3 URI: s3://bucket/prefix"),
]
EndpointUrl = Annotated[
    str,
    Field(max_length=1024),
    # No user:password@ in the host part: a spec is readable by everyone who may list FineTuneJobs.
    Cel.regex(
        "^https?://[^/ @]+(/.*)?$",
        "endpoint must be an http:// or https:// URL, without user:password (credentials go in "
        "credentialsSecretRef)",
    ),
]
SecretName = Annotated[
    str,
    Field(min_length=1, max_length=253),
    Cel.regex(_DNS_SUBDOMAIN, "must be the name of a Secret in the FineTuneJob's namespace"),
]
SecretKey = Annotated[
    str,
    Field(min_length=1, max_length=253),
    Cel.regex("^[-._a-zA-Z0-9]+$", "must be a Secret data key (letters, digits, '-', '_', '.')"),
]
ModuleName = Annotated[str, Field(min_length=1, max_length=256)]
# A name that is also a label value (Kueue reads queue and priority class names from labels).
KubernetesName = Annotated[
    str,
    Field(min_length=1, max_length=63),
    Cel.regex(_DNS_SUBDOMAIN, "must be a lowercase DNS name (letters, digits, '-', '.')"),
]

# The Kubernetes quantity grammar, as controller-gen emits it for resource.Quantity.
_QUANTITY_PATTERN = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"  # noqa: E501
_QUANTITY_RE = re.compile(_QUANTITY_PATTERN)


def _quantity(value: Any) -> Any:
    # YAML turns `cpu: 4` into an int; Kubernetes accepts both, so normalise to the string form.
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and not _QUANTITY_RE.match(value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 500m, 4, 16Gi)")
    return value


class _IntOrStringQuantity:
    """Schema of a resource.Quantity: an int or a string, with the quantity pattern."""

    @staticmethod
    def __get_pydantic_json_schema__(schema: Any, handler: Any) -> JsonSchemaValue:
        return {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": _QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }


Quantity = Annotated[str, BeforeValidator(_quantity), _IntOrStringQuantity()]


def is_s3_uri(uri: str | None) -> bool:
    return uri is not None and uri.startswith("s3://")
