"""``multibake gc``: delete what releases left behind and what retention no longer keeps, never what a kept tag needs.

For each repository of the plan: list its tags, read the graph (read.py), ask the rules which tags
should go (policy.py), turn them into steps that touch nothing a kept tag reaches (graph.py). A dry
run (the default) stops there. ``--apply`` first asks the registry whether it deletes at all (a
``DELETE`` of a digest nobody has: 404 where deletes are on, 405 where they are off), then runs
the steps in order, each retried like every registry write, each checking first that its tags
still point where they did when read (a release may have moved them since): a moved tag is left
alone and said. A run stopped midway leaves every kept tag whole, and the next run finishes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from multibake import platforms as arch
from multibake.config.schema import PerPlatformTags
from multibake.config.upkeep import duration
from multibake.errors import BuildError, UsageError
from multibake.maintain import policy, read
from multibake.maintain.graph import Action, Step, steps
from multibake.maintain.naming import Naming
from multibake.plan.model import Plan
from multibake.plan.pieces import tag_rules
from multibake.plan.transforms import select
from multibake.registry.client import Registry
from multibake.registry.manifest import RawManifest
from multibake.release import shards
from multibake.release import tools as release_
from multibake.release.publish import _parallel

_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_PROBE = "sha256:" + "0" * 64  # a digest no manifest has: deleting it answers whether deletes are on
_PLATFORMS = ("linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm/v6")  # tags of earlier plans too


@dataclass(frozen=True, kw_only=True, slots=True)
class GcOptions:
    config: Path
    registry: str | None = None
    selectors: tuple[str, ...] = ()
    apply: bool = False
    grace: str | None = None  # beats retention.staging_grace
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


@dataclass(frozen=True, kw_only=True, slots=True)
class Outcome:
    step: Step
    done: bool = False  # applied
    problem: str | None = None  # why it was not applied


@dataclass(frozen=True, kw_only=True, slots=True)
class GcReport:
    registry: str
    applied: bool
    grace: str
    outcomes: tuple[Outcome, ...]
    kept: int  # tags left in place
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return all(o.problem is None for o in self.outcomes)

    @property
    def freed(self) -> int:
        return sum(o.step.freed for o in self.outcomes if o.done or not self.applied)


def gc(opts: GcOptions, tools: release_.Tools) -> GcReport:
    """Find (and with ``apply``, delete) what the rules no longer keep, repository by repository."""
    release = shards.resolve(opts.config, opts.registry, None, check_files=False)
    p = select(release.plan, list(opts.selectors))
    grace_text = opts.grace if opts.grace is not None else release.loaded.config.retention.staging_grace
    try:
        grace = duration(grace_text)
    except ValueError as exc:
        raise UsageError(f"--grace: {exc}") from None
    with release_.logged_in(tools, release.plan.registry) as with_login:
        reg = release_.registry_for(release, with_login)
        families = _families(release, p)
        found: list[Step] = []
        notes: list[str] = []
        kept = 0
        for repository in sorted({c.image for c in p.cells}):
            repo_steps, repo_notes, repo_kept = _repository(reg, repository, p, families, now=opts.now(), grace=grace)
            found += repo_steps
            notes += repo_notes
            kept += repo_kept
        outcomes = _apply(reg, found, tools) if opts.apply and found else tuple(Outcome(step=s) for s in found)
    return GcReport(
        registry=p.registry, applied=opts.apply, grace=grace_text, outcomes=outcomes, kept=kept, notes=tuple(notes)
    )


def _repository(
    reg: Registry, repository: str, p: Plan, families: Sequence[policy.Family], *, now: datetime, grace: timedelta
) -> tuple[list[Step], list[str], int]:
    tags = sorted(reg.tags(repository, missing_ok=True))
    if not tags:
        return [], [], 0
    repo, manifests = read.graph(reg, repository, tags)
    planned = {
        ref.rpartition(":")[2]
        for c in p.cells
        if c.image == repository
        for ref in (*c.tags, *(r for _, refs in c.platform_tags for r in refs))
    }
    ours = [f for f in families if f.name in {c.family for c in p.cells if c.image == repository}]
    timed = [t for t in policy.candidates(tags, ours, planned) if t in repo.tags]
    times = _parallel(lambda t: read.built(reg, repository, manifests[repo.tags[t]], manifests), timed)
    verdict = policy.doomed(list(repo.tags), ours, planned, dict(zip(timed, times, strict=True)), now=now, grace=grace)
    found = steps(repo, {**verdict.doomed, **_retired_staging(p, repository, repo.tags, verdict.doomed)})
    gone = {t for s in found for t in s.tags}
    return found, [f"{repository}:{n}" for n in verdict.notes], len(repo.tags) - len(gone)


def _retired_staging(p: Plan, repository: str, tags: Mapping[str, str], doomed: Mapping[str, str]) -> dict[str, str]:
    """The staging tag of each cell whose public tags retention deletes: it goes with them, whatever its age."""
    out = {}
    for c in p.cells:
        staging = c.staging.rpartition(":")[2]
        public = [r.rpartition(":")[2] for r in (*c.tags, *(r for _, refs in c.platform_tags for r in refs))]
        held = [t for t in public if t in tags]
        if c.image == repository and staging in tags and held and all(t in doomed for t in held):
            out[staging] = f"staging tag of {c.target}, whose tags are deleted"
    return out


def _families(release: shards.Resolved, p: Plan) -> list[policy.Family]:
    """Each planned family's naming (its tag templates, run backwards) and retention rules."""
    config = release.loaded.config
    out = []
    for fam in p.families:
        spec = config.images[fam.name]
        known: dict[str, set[str]] = {}
        for c in release.plan.cells:
            if c.family == fam.name:
                for axis, value in c.axes:
                    known.setdefault(axis, set()).add(value)
        templates = tuple(t for t, _, _ in tag_rules(fam.name, spec, known, release.loaded))
        naming = Naming(
            templates=templates,
            known={a: sorted(v) for a, v in known.items()},
            affixes=_affixes(config.per_platform_tags),
        )
        rules = spec.retention
        out.append(
            policy.Family(
                name=fam.name,
                naming=naming,
                rules=policy.Rules(
                    keep_last=tuple(rules.keep_last.items()) if rules else (),
                    unplanned_after=duration(rules.unplanned_after) if rules and rules.unplanned_after else None,
                ),
            )
        )
    return out


def _affixes(style: PerPlatformTags) -> dict[str, str]:
    if style is PerPlatformTags.NONE:
        return {}
    if style is PerPlatformTags.PREFIX:
        return {p: arch.name(p, arch.Scheme.BASHBREW) + "-" for p in _PLATFORMS}
    return {p: "-" + arch.name(p, arch.Scheme.SHORT) for p in _PLATFORMS}


# --- applying ----------------------------------------------------------------------------------------


def _apply(reg: Registry, found: Sequence[Step], tools: release_.Tools) -> tuple[Outcome, ...]:
    for repository in sorted({s.repository for s in found}):
        reg.delete(f"{repository}@{_PROBE}")  # 405: one line and exit 1, before anything is touched
    out: list[Outcome] = []
    for step in found:
        try:
            problem = _untag(reg, step) if step.action is Action.UNTAG else _delete(reg, step)
        except BuildError as exc:
            problem = str(exc)
        out.append(Outcome(step=step, done=problem is None, problem=problem))
        if problem is None:
            tools.echo(f"multibake: gc: {step.action.value}d {_name(step)} ({step.why})")
    return tuple(out)


def _moved(reg: Registry, step: Step) -> str | None:
    """Why a step's tags no longer point where they did when read, or None."""
    for tag in step.tags:
        held = reg.manifest(f"{step.repository}:{tag}")
        if held is not None and held.digest != step.digest:
            return f"{tag} moved to {held.digest[:19]} since it was read: left alone"
    return None


def _untag(reg: Registry, step: Step) -> str | None:
    """Remove one tag whose manifest a kept tag needs: point it at an empty index of its own, delete that.

    Distribution deletes manifests, not tags, and refuses ``DELETE`` of a tag (400 DIGEST_INVALID).
    """
    moved = _moved(reg, step)
    if moved:
        return moved
    (tag,) = step.tags
    doc = {"schemaVersion": 2, "mediaType": _OCI_INDEX, "manifests": [], "annotations": {"org.multibake.gc": tag}}
    body = json.dumps(doc, separators=(",", ":")).encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    reg.write(RawManifest(media_type=_OCI_INDEX, digest=digest, doc=doc, body=body), [f"{step.repository}:{tag}"])
    reg.delete(f"{step.repository}@{digest}")
    return None


def _delete(reg: Registry, step: Step) -> str | None:
    moved = _moved(reg, step)
    if moved:
        return moved
    reg.delete(f"{step.repository}@{step.digest}")  # False: gone already (a rerun after a stop midway)
    return None


def _name(step: Step) -> str:
    repo = step.repository.rpartition("/")[2]
    return ", ".join(f"{repo}:{t}" for t in step.tags) if step.tags else f"{repo}@{step.digest[:19]}"
