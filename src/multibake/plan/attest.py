"""Attestations per cell: platforms.yaml's ``attest:`` (release-wide and per family) and ``build --attest``,
rendered as bake's ``attest`` entries.

Provenance: ``type=provenance,mode=min|max`` or ``disabled=true``. SBOM: ``type=sbom`` with the
generator image (BuildKit's own scanner, docker/buildkit-syft-scanner, when none is named) and the
release's SOURCE_DATE_EPOCH as a generator parameter (BuildKit hands it to the scanner as
BUILDKIT_SCAN_SOURCE_DATE_EPOCH; a scanner that reads it stamps its document with the release's time
instead of the clock's, so the same image gives the same SBOM), or ``type=sbom,disabled=true``.
Nothing set renders nothing: buildx's own default.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from multibake.config.schema import Attest, Sbom
from multibake.errors import UsageError
from multibake.kinds import Provenance

PROVENANCE = "provenance"
SBOM = "sbom"


@dataclass(frozen=True, kw_only=True, slots=True)
class SbomChoice:
    """SBOM attestations on or off, and which generator image makes them (None: BuildKit's default)."""

    enabled: bool = True
    generator: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Choice:
    """What a release (or a family, or the command line) says of each kind; None leaves it to the next."""

    provenance: Provenance | None = None
    sbom: SbomChoice | None = None

    def over(self, other: Choice) -> Choice:
        """This choice where it says something, ``other`` where it does not."""
        return Choice(
            provenance=self.provenance if self.provenance is not None else other.provenance,
            sbom=self.sbom if self.sbom is not None else other.sbom,
        )


def choice_of(attest: Attest | None) -> Choice:
    """What an ``attest:`` mapping of platforms.yaml says (``sbom: true`` is ``sbom: {}``)."""
    if attest is None:
        return Choice()
    sbom = attest.sbom
    if isinstance(sbom, bool):
        sbom = Sbom(enabled=sbom)
    return Choice(
        provenance=attest.provenance,
        sbom=SbomChoice(enabled=sbom.enabled, generator=sbom.generator) if sbom is not None else None,
    )


def epoch(created: str) -> int:
    """Seconds since 1970 of an RFC 3339 time (the plan's ``created``)."""
    return int(datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())


def provenance_spec(provenance: Provenance) -> str:
    if provenance is Provenance.OFF:
        return "type=provenance,disabled=true"
    return f"type=provenance,mode={provenance.value}"


def sbom_spec(sbom: SbomChoice, source_date_epoch: int | None) -> str:
    if not sbom.enabled:
        return "type=sbom,disabled=true"
    spec = "type=sbom"
    if sbom.generator:
        spec += f",generator={sbom.generator}"
    if source_date_epoch is not None:
        spec += f",SOURCE_DATE_EPOCH={source_date_epoch}"
    return spec


def specs(choice: Choice, source_date_epoch: int | None = None) -> tuple[str, ...]:
    """bake's ``attest`` entries for a choice, provenance first."""
    out = []
    if choice.provenance is not None:
        out.append(provenance_spec(choice.provenance))
    if choice.sbom is not None:
        out.append(sbom_spec(choice.sbom, source_date_epoch))
    return tuple(out)


def kind_of(spec: str) -> str:
    """The ``type=`` of a bake attest entry."""
    for part in spec.split(","):
        key, _, value = part.partition("=")
        if key == "type":
            return value
    return ""


def overridden(current: tuple[str, ...], choice: Choice, source_date_epoch: int | None) -> tuple[str, ...]:
    """A cell's entries with the kinds ``choice`` names replaced (``build --attest`` beats platforms.yaml)."""
    replaced = {PROVENANCE} if choice.provenance is not None else set()
    if choice.sbom is not None:
        replaced.add(SBOM)
    kept = tuple(s for s in current if kind_of(s) not in replaced)
    return kept + specs(choice, source_date_epoch)


def wants_sbom(entries: tuple[str, ...]) -> bool:
    """Whether a cell's images get an SBOM attestation (what ``verify`` then checks)."""
    return any(kind_of(s) == SBOM and "disabled=true" not in s.split(",") for s in entries)


def parse_option(items: tuple[str, ...]) -> Choice:
    """``--attest provenance=min|max|off`` and ``--attest sbom=on|off|generator=IMAGE`` (the last of each wins)."""
    choice = Choice()
    for item in items:
        key, eq, value = item.partition("=")
        if key == PROVENANCE and eq:
            try:
                choice = Choice(provenance=Provenance(value), sbom=choice.sbom)
            except ValueError:
                raise UsageError(f"--attest {item!r}: provenance is one of min, max, off") from None
        elif key == SBOM and eq:
            choice = Choice(provenance=choice.provenance, sbom=_sbom_option(item, value))
        else:
            raise UsageError(
                f"--attest {item!r}: expected provenance=min, provenance=max or provenance=off, "
                "or sbom=on, sbom=off or sbom=generator=IMAGE"
            )
    return choice


def _sbom_option(item: str, value: str) -> SbomChoice:
    if value in ("on", "true"):
        return SbomChoice()
    if value in ("off", "false"):
        return SbomChoice(enabled=False)
    key, eq, image = value.partition("=")
    if key == "generator" and eq and image and not any(c in image for c in ',"= '):
        return SbomChoice(generator=image)
    raise UsageError(f"--attest {item!r}: sbom is on, off or generator=IMAGE")
