"""Where a FineTuneJob reads from: the base model and the dataset."""

from __future__ import annotations

import string
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    Field,
    field_validator,
)

from kubetune_api.base import (
    ApiModel,
    SecretKey,
    SecretName,
    SourceUri,
    is_s3_uri,
)
from kubetune_api.cel import Cel


class Method(StrEnum):
    """Fine-tuning method."""

    LORA = "lora"
    QLORA = "qlora"
    FULL = "full"


class CredentialsSecretRef(ApiModel):
    """A Secret in the FineTuneJob's namespace that holds S3 credentials. Credentials are never inline."""

    name: SecretName = Field(description="Name of the Secret, in the same namespace as the FineTuneJob.")
    access_key_id_key: SecretKey = Field(
        default="AWS_ACCESS_KEY_ID", description="Key in the Secret that holds the access key id."
    )
    secret_access_key_key: SecretKey = Field(
        default="AWS_SECRET_ACCESS_KEY", description="Key in the Secret that holds the secret access key."
    )


class ModelSource(ApiModel):
    """The base model to fine-tune."""

    cel_rules = (
        Cel(
            "!has(self.credentialsSecretRef) || self.uri.startsWith('s3://')",
            "baseModel.credentialsSecretRef only applies to an s3:// uri",
            lambda m: m.credentials_secret_ref is None or is_s3_uri(m.uri),
            reason="FieldValueForbidden",
            field_path=".credentialsSecretRef",
        ),
    )

    uri: Annotated[SourceUri, Cel.immutable("baseModel.uri is immutable; create a new FineTuneJob")] = Field(
        description=(
            "Where the model is: an S3 prefix holding a Hugging Face model folder "
            "(s3://bucket/models/name/), an S3 .gguf object, pvc://claim/path, or an absolute path in the "
            "trainer image. The trainer detects GGUF files. Immutable."
        )
    )
    revision: str | None = Field(
        default=None,
        max_length=256,
        description="Revision of the model (e.g. the Hugging Face commit the folder came from); "
        "recorded in the artifact manifest.",
    )
    credentials_secret_ref: CredentialsSecretRef | None = Field(
        default=None, description="S3 credentials for the model; defaults to output.credentialsSecretRef."
    )


TEXT_FIELD_TEMPLATE = "{text}"


def template_fields(template: str) -> list[str]:
    """The `{field}` placeholders of a template, in order of appearance."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


class DatasetSpec(ApiModel):
    """Training (and evaluation) data: JSONL, JSON, CSV or Parquet files, one example per row."""

    cel_rules = (
        Cel(
            "!(has(self.evalRatio) && has(self.evalUri))",
            "evalRatio and evalUri are mutually exclusive: split the train set or give an eval file",
            lambda d: d.eval_ratio is None or d.eval_uri is None,
            reason="FieldValueForbidden",
            field_path=".evalRatio",
        ),
        Cel(
            "!has(self.textTemplate) || self.format in ['auto', 'text']",
            "textTemplate only applies to format text (or auto)",
            lambda d: d.text_template is None or d.format in ("auto", "text"),
            reason="FieldValueForbidden",
            field_path=".textTemplate",
        ),
        Cel(
            "!has(self.credentialsSecretRef) || self.trainUri.startsWith('s3://') "
            "|| (has(self.evalUri) && self.evalUri.startsWith('s3://'))",
            "dataset.credentialsSecretRef only applies to s3:// uris",
            lambda d: d.credentials_secret_ref is None or is_s3_uri(d.train_uri) or is_s3_uri(d.eval_uri),
            reason="FieldValueForbidden",
            field_path=".credentialsSecretRef",
        ),
        Cel(
            "!has(self.responseField) || (has(self.textTemplate) "
            "&& self.textTemplate.contains('{' + self.responseField + '}'))",
            "dataset.responseField must name a {placeholder} of dataset.textTemplate",
            lambda d: (
                d.response_field is None
                or (d.text_template is not None and f"{{{d.response_field}}}" in d.text_template)
            ),
            field_path=".responseField",
        ),
    )

    train_uri: SourceUri = Field(
        description="Training data: a JSONL, JSON, CSV or Parquet file (told apart by its extension) at "
        "s3://bucket/key, pvc://claim/path or an absolute path."
    )
    eval_uri: SourceUri | None = Field(
        default=None, description="Evaluation data, in the same form as trainUri. Excludes evalRatio."
    )
    eval_ratio: float | None = Field(
        default=None,
        gt=0,
        le=0.5,
        description="Fraction of the training rows held out for evaluation (split with dataset.seed). "
        "Excludes evalUri. Unset, and no evalUri: every row trains and nothing is evaluated.",
    )
    format: Literal["auto", "text", "chat", "promptCompletion"] = Field(
        default="auto",
        description="Record format. text: one string per record (textTemplate or a 'text' field); chat: a "
        "'messages' list rendered with the tokenizer's chat template; promptCompletion: 'prompt' and "
        "'completion' fields, loss on the completion only; auto: detected from the first records.",
    )
    text_template: (
        Annotated[
            str,
            Field(max_length=8192),
            Cel.regex("[{][A-Za-z_][A-Za-z0-9_]*[}]", "textTemplate must reference at least one {field}"),
        ]
        | None
    ) = Field(
        default=None,
        description="Template that turns a record into training text; {field} placeholders are replaced by "
        "the record's fields, e.g. '### Instruction: {prompt} ### Answer: {response}'.",
    )
    response_field: Annotated[str, Field(max_length=256)] | None = Field(
        default=None,
        description="The textTemplate placeholder that holds the answer: generation-based evaluation "
        "and export checks prompt with the template up to it. Unset: the last placeholder.",
    )
    max_samples: int | None = Field(
        default=None, ge=1, description="Use at most this many training records (after shuffling)."
    )
    seed: int = Field(
        default=42,
        ge=0,
        description="Seed of the shuffle, of the evalRatio split and of the sampled evaluation rows.",
    )
    credentials_secret_ref: CredentialsSecretRef | None = Field(
        default=None, description="S3 credentials for the data; defaults to output.credentialsSecretRef."
    )

    @field_validator("text_template")
    @classmethod
    def _placeholders_name_fields(cls, value: str | None) -> str | None:
        # Beyond what CEL can parse: every placeholder must be a plain field name.
        if value is None:
            return value
        try:
            fields = template_fields(value)
        except ValueError as exc:
            raise ValueError(f"textTemplate is not a valid template: {exc}") from exc
        if not fields or any(not f.isidentifier() for f in fields):
            raise ValueError("textTemplate placeholders must name row fields, e.g. '{text}'")
        return value

    @property
    def has_eval_data(self) -> bool:
        return self.eval_uri is not None or self.eval_ratio is not None

    @property
    def template(self) -> str | None:
        """The template rows are rendered with: textTemplate, or each row's 'text' for format text."""
        if self.text_template is not None:
            return self.text_template
        return TEXT_FIELD_TEMPLATE if self.format == "text" else None

    @property
    def answer_field(self) -> str | None:
        """The answer placeholder of the template; None without one."""
        template = self.template
        if template is None:
            return None
        return self.response_field or template_fields(template)[-1]
