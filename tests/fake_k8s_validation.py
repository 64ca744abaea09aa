"""Validation in the fake Kubernetes API (tests/fake_k8s.py): what the API server refuses with 422.

kubernetes-validate's strict schema (unknown fields are errors) plus the metadata
checks the API server makes beyond the schema (names, label keys and values).
"""
from __future__ import annotations

import functools
import re
from typing import Any

from tests.fake_k8s_wire import K8S_VERSION

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
API_VERSIONS = {"DaemonSet": "apps/v1"}
"""Kinds outside the core group, and their apiVersion (the others are "v1")."""


def api_version(kind: str) -> str:
    return API_VERSIONS.get(kind, "v1")


def check_metadata(obj: dict[str, Any], kind: str) -> list[str]:
    """What the API server checks beyond the schema: names, label keys and values."""
    errors = []
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    pattern = _DNS_LABEL if kind == "Pod" else _DNS_SUBDOMAIN
    if not name or len(name) > (63 if kind == "Pod" else 253) or not pattern.match(name):
        errors.append(f"metadata.name: Invalid value: {name!r}")
    for k, v in (meta.get("labels") or {}).items():
        prefix, _, label = k.rpartition("/")
        if not _LABEL_NAME.match(label) or len(label) > 63 or (prefix and not _DNS_SUBDOMAIN.match(prefix)):
            errors.append(f"metadata.labels: Invalid value: {k!r}: invalid label key")
        if not isinstance(v, str) or len(v) > 63 or not _LABEL_VALUE.match(v):
            errors.append(f"metadata.labels: Invalid value: {v!r}: invalid label value")
    for k, v in (meta.get("annotations") or {}).items():
        if not isinstance(v, str):
            errors.append(f"metadata.annotations: Invalid value: {k!r} must be a string")
    if sum(len(k) + len(v) for k, v in (meta.get("annotations") or {}).items()) > 256 * 1024:
        errors.append("metadata.annotations: Too long")
    return errors


@functools.lru_cache(maxsize=None)
def _schema_validator(kind: str, version: str) -> Any:
    """kubernetes-validate's strict schema for ``kind``, loaded once.

    ``kubernetes_validate.validate`` re-reads the (large) definitions file on every
    call (~20 ms); the fake validates every object it receives, so it builds the
    same validator the same way (same files, same Draft 2020-12 validator) once.
    """
    import jsonschema
    from kubernetes_validate.utils import schema_contents
    from referencing import Registry, Resource

    schema_dir = f"kubernetes-json-schema/v{version}.0-local-strict"
    group = api_version(kind).rpartition("/")[0]
    schema = schema_contents(f"{schema_dir}/{kind.lower()}{'-' + group if group else ''}-v1.json", version)
    defs = schema_contents(f"{schema_dir}/_definitions.json", version)
    registry = Resource.from_contents(defs) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def validate(obj: dict[str, Any], kind: str, version: str = K8S_VERSION) -> list[str]:
    """Schema (kubernetes-validate's strict schema) and metadata errors; empty when valid."""
    body = dict(obj)
    body.setdefault("apiVersion", api_version(kind))
    body.setdefault("kind", kind)
    errors = check_metadata(body, kind)
    error = next(iter(_schema_validator(kind, version).iter_errors(body)), None)
    if error is not None:
        errors.append(f"{'.'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}")
    return errors
