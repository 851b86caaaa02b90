"""When an image was built, from what the registry holds: pure readers of configs and provenance.

The registry keeps no time for a tag. The image says when it was built in two places: BuildKit's
provenance attestation (``buildFinishedOn``, SLSA v0.2; ``runDetails.metadata.finishedOn``, v1),
always the real time; and the config's ``created``, the real time too unless the build pinned it
(``SOURCE_DATE_EPOCH``, which multibake's own ``org.opencontainers.image.created`` label then
carries as well: a config time equal to that label says nothing about when the build ran).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

CREATED_LABEL = "org.opencontainers.image.created"
PROVENANCE = "https://slsa.dev/provenance/"  # the predicate type's prefix, v0.2 and v1


def timestamp(value: object) -> datetime | None:
    """An RFC 3339 time (``Z`` or an offset, fractions of a second) as an aware datetime, else None."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    head, dot, tail = text.partition(".")
    if dot:  # Python before 3.11.? takes at most 6 digits of a fraction; Go writes 9
        digits = "".join(c for c in tail if c.isdigit())
        text = f"{head}.{digits[:6]}{tail[len(digits) :]}"
    try:
        found = datetime.fromisoformat(text)
    except ValueError:
        return None
    return found if found.tzinfo else found.replace(tzinfo=UTC)


def from_config(config: Mapping[str, Any]) -> datetime | None:
    """The config's ``created``, unless it is the reproducible time the build was given."""
    created = timestamp(config.get("created"))
    labels = (config.get("config") or {}).get("Labels") or {}
    pinned = timestamp(labels.get(CREATED_LABEL))
    if created is None or (pinned is not None and abs((created - pinned).total_seconds()) < 1):
        return None
    return created


def from_provenance(statement: Mapping[str, Any]) -> datetime | None:
    """When the build finished (or started), from an in-toto provenance statement."""
    if not str(statement.get("predicateType", "")).startswith(PROVENANCE):
        return None
    predicate = statement.get("predicate") or {}
    v02 = predicate.get("metadata") or {}
    v1 = ((predicate.get("runDetails") or {}).get("metadata")) or {}
    for value in (v02.get("buildFinishedOn"), v1.get("finishedOn"), v02.get("buildStartedOn"), v1.get("startedOn")):
        found = timestamp(value)
        if found is not None:
            return found
    return None


def newest(times: Iterable[datetime | None]) -> datetime | None:
    """The latest of the times found: an image rebuilt today is as young as its newest evidence."""
    found = [t for t in times if t is not None]
    return max(found) if found else None


def provenance_layers(manifest: Mapping[str, Any]) -> list[str]:
    """The blobs of an attestation manifest that hold provenance statements."""
    return [
        str(layer["digest"])
        for layer in manifest.get("layers", [])
        if str((layer.get("annotations") or {}).get("in-toto.io/predicate-type", "")).startswith(PROVENANCE)
    ]
