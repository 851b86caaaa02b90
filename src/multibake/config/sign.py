"""The ``sign:`` section: who signs a release's images, top level or per family.

``sign: {cosign: {key: cosign.key}}`` signs every index and platform image of a release with cosign
before any public tag moves (release/signing.py); a family's own ``sign:`` replaces the top-level one
(``sign: {enabled: false}`` leaves the family unsigned). A key is a file (relative to platforms.yaml),
``env://VARIABLE`` or a KMS URI that cosign resolves itself; its password is never in this file
($COSIGN_PASSWORD).
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from multibake.config.model import Model

ENV_SCHEME = "env://"
# KMS and hardware keys cosign resolves itself: passed through untouched
KMS_SCHEMES = ("awskms://", "gcpkms://", "azurekms://", "hashivault://", "k8s://", "pkcs11:")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


def key_problem(value: str) -> str | None:
    """Why ``value`` is not a key reference cosign takes (a file, env://VAR, a KMS URI), or None."""
    if not value.strip():
        return "a key reference may not be empty"
    if _UNSAFE.search(value):
        return "a key reference may not contain control characters"
    if value.startswith(ENV_SCHEME):
        if not _ENV_NAME.fullmatch(value[len(ENV_SCHEME) :]):
            return "env:// must name an environment variable (letters, digits, _): env://COSIGN_KEY"
        return None
    scheme = _SCHEME.match(value)
    if scheme and not value.startswith(KMS_SCHEMES):
        known = ", ".join(s.removesuffix(":") for s in (ENV_SCHEME, *KMS_SCHEMES))
        return f"unknown key scheme {scheme.group(1)}://: a file path, or one of {known}"
    return None


def is_file_key(value: str) -> bool:
    return not value.startswith((ENV_SCHEME, *KMS_SCHEMES))


class Cosign(Model):
    """cosign's private key (or keyless signing), and the public key that verifies its signatures."""

    key: str | None = Field(
        default=None,
        description="private key: a file (relative to platforms.yaml), env://VARIABLE, or a KMS URI (awskms://, "
        "gcpkms://, azurekms://, hashivault://, k8s://, pkcs11:) passed to cosign untouched; its password "
        "comes from $COSIGN_PASSWORD",
    )
    pub: str | None = Field(
        default=None,
        description="public key for `multibake verify`: a file, env://VARIABLE or a KMS URI; default: the .pub "
        "file beside a key file (as `cosign generate-key-pair` writes it), else the key itself",
    )
    keyless: bool = Field(
        default=False,
        description="sign with the CI's OIDC identity (a Fulcio certificate and a Rekor entry), as cosign does; "
        "needs the internet",
    )
    identity: str | None = Field(default=None, description="keyless verify: regexp of the certificate identity")
    issuer: str | None = Field(default=None, description="keyless verify: regexp of the OIDC issuer")

    @field_validator("key", "pub")
    @classmethod
    def _reference(cls, value: str | None) -> str | None:
        problem = key_problem(value) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _one_way(self) -> Cosign:
        if self.keyless == (self.key is not None):
            raise ValueError("cosign needs exactly one of key: (a file, env://VAR or a KMS URI) or keyless: true")
        return self


class Sign(Model):
    """Signatures of every index and platform image, written before any public tag moves."""

    enabled: bool = Field(default=True, description="false: not signed (a family's own sign: {enabled: false})")
    cosign: Cosign | None = Field(default=None, description="sign with cosign: {key: cosign.key}")

    @model_validator(mode="after")
    def _signer(self) -> Sign:
        if self.enabled and self.cosign is None:
            raise ValueError("sign needs cosign: {key: cosign.key} (or enabled: false)")
        return self
