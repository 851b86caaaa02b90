"""Size gates: a platform image that grew past a limit stops a release, or fails ``diff --max-growth``. Pure.

A limit is a share of the earlier size (``10%``) or a size (``50MB``, ``200MiB``). An image compared
with nothing (new on this side) has nothing to grow from and passes. A breach names the image, the
platform, the compressed sizes before → after and the layers that grew: the layers the earlier image
did not have, largest first (an accidental ``COPY`` of a build directory is one new 200 MB layer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from multibake.bake.run import BuildReport, restatus
from multibake.config.upkeep import Limit
from multibake.kinds import Echo, Status
from multibake.plan.model import Plan
from multibake.registry.client import Registry
from multibake.registry.manifest import RawManifest, platform_name

Layers = tuple[tuple[str, int], ...]  # (digest, compressed size), in the manifest's order


@dataclass(frozen=True, kw_only=True, slots=True)
class Breach:
    ref: str  # the tag (or staged image) that grew
    platform: str
    before: int
    after: int
    grown: Layers  # the layers the earlier image did not have, largest first
    limit: str

    @property
    def percent(self) -> float:
        return (self.after - self.before) * 100 / self.before if self.before else float("inf")

    def describe(self) -> str:
        layers = ", ".join(f"{d[:19]}… {size_text(n)}" for d, n in self.grown[:3]) or "none new (layers grew in place)"
        more = f" and {len(self.grown) - 3} more" if len(self.grown) > 3 else ""
        return (
            f"{self.ref} {self.platform} grew {size_text(self.before)} → {size_text(self.after)} "
            f"(+{size_text(self.after - self.before)}, {self.percent:+.1f} %; limit {self.limit}); "
            f"layers that grew: {layers}{more}"
        )


def check(ref: str, platform: str, before: Layers | None, after: Layers | None, limit: Limit) -> Breach | None:
    """A breach when ``after`` grew past ``limit`` against ``before``; None when it did not, or either is missing."""
    if before is None or after is None:
        return None
    old, new = sum(n for _, n in before), sum(n for _, n in after)
    if not limit.exceeded(old, new):
        return None
    had = {d for d, _ in before}
    grown = tuple(sorted(((d, n) for d, n in after if d not in had), key=lambda item: -item[1]))
    return Breach(ref=ref, platform=platform, before=old, after=new, grown=grown, limit=limit.text)


def size_text(n: int) -> str:
    """Bytes for people, in decimal units as registries and ``docker images`` show them."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def breaches(items: Sequence[tuple[str, str, Layers | None, Layers | None]], limit: Limit) -> list[Breach]:
    """Every (ref, platform, before, after) that grew past ``limit``."""
    return [b for ref, platform, old, new in items if (b := check(ref, platform, old, new, limit)) is not None]


def layers_of(reg: Registry, image: str, held: RawManifest | None) -> dict[str, Layers]:
    """platform → the layers of each platform image of ``held`` (an index, or one image)."""
    if held is None:
        return {}
    if not held.is_index:
        config = reg.config_of(image, held)
        return {platform_name(config): _layers(held)}
    out = {}
    for platform, digest in held.entries().items():
        image_manifest = reg.manifest(f"{image}@{digest}")
        if image_manifest is not None:
            out[platform] = _layers(image_manifest)
    return out


def _layers(held: RawManifest) -> Layers:
    return tuple((str(layer.get("digest")), int(layer.get("size", 0))) for layer in held.doc.get("layers", []))


def staged(reg: Registry, plan: Plan, sources: Mapping[str, Sequence[str]], limit: Limit) -> dict[str, list[Breach]]:
    """Cells whose staged images grew past ``limit`` against what their first public tag serves now."""
    out: dict[str, list[Breach]] = {}
    for cell in plan.cells:
        refs = sources.get(cell.target)
        if not refs or not cell.tags:
            continue
        now = layers_of(reg, cell.image, reg.manifest(cell.tags[0]))
        if not now:
            continue  # a new tag: nothing to grow from
        new: dict[str, Layers] = {}
        for ref in refs:
            new.update(layers_of(reg, cell.image, reg.manifest(ref)))
        found = breaches([(cell.tags[0], p, now.get(p), layers) for p, layers in new.items()], limit)
        if found:
            out[cell.target] = found
    return out


def said(
    reg: Registry, plan: Plan, sources: Mapping[str, list[str]], gate: Limit | None, say: Echo
) -> dict[str, list[Breach]]:
    """Cells whose staged images grew past the gate, each breach said (image, platform, sizes, layers)."""
    grown = staged(reg, plan, sources, gate) if gate is not None else {}
    for found in grown.values():
        for breach in found:
            say(f"multibake: size gate: {breach.describe()}")
    return grown


def held_back(report: BuildReport, grown: Mapping[str, object], gate: Limit | None) -> BuildReport:
    """A release the gate stopped: the cells that grew failed, the others staged; no tag moved."""
    limit = gate.text if gate is not None else ""
    why = f"held back: the size gate stopped the release ({', '.join(sorted(grown))} grew past {limit})"
    cells = tuple(
        restatus(c, {Status.BUILT: Status.FAILED if c.target in grown else Status.STAGED}, why) for c in report.cells
    )
    return replace(report, cells=cells)
