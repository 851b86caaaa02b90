"""plan: Config → Plan, a pure function, in named steps.

``plan`` checks the registry, then for each family in dependency order: checks its name, expands its
matrix (matrix.py), compiles its templates and tag rules once, indexes its parent's cells, and makes
each cell (target, platforms, tags, per-platform tags, parent, labels, cache, per-platform targets).
Every name and image reference is claimed once, so two cells producing the same one are refused.
Same input, same plan, same order; linear in the number of cells.

The data types live in model.py, reference parsing in refs.py and transforms (select, restrict,
without, …) in transforms.py; their names are re-exported here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from multibake.config.load import Loaded
from multibake.config.schema import Family, PerPlatformTags
from multibake.config.yamlpos import KeyPath
from multibake.errors import UsageError, config_error
from multibake.lowgc import paused
from multibake.plan import attest
from multibake.plan.matrix import RawCell, expand, matches, platform_list
from multibake.plan.model import Cell, FamilyPlan, Meta, Plan, PlatformTarget, View
from multibake.plan.pieces import (
    TARGET_UNSAFE,
    TagRules,
    cache_refs,
    cell_target,
    describe,
    family_order,
    oci_labels,
    platform_tag,
    secret_specs,
    split_targets,
    tag_rules,
)
from multibake.plan.templates import Template, compile_template, render
from multibake.plan.transforms import narrowed
from multibake.refs import (
    CREDENTIALS_ADVICE,
    MAX_TAG,
    TAG,
    bounded_tag,
    image_name,
    repository_problem,
)

_SECRET_ARG = re.compile(r"_TOKEN$|PASSWORD|_KEY$|SECRET", re.IGNORECASE)
Owner = tuple[str, dict[str, str] | str, str]  # family, cell values (or a description), role


@dataclass
class _Run:
    """What every step of one planning run shares."""

    loaded: Loaded
    meta: Meta
    split_all: bool
    default_platforms: tuple[str, ...]
    owners: dict[str, Owner] = field(default_factory=dict)  # every name and reference → who made it
    by_target: dict[str, Cell] = field(default_factory=dict)
    by_family: dict[str, list[Cell]] = field(default_factory=dict)
    views: dict[str, View] = field(default_factory=dict)

    def claim(self, key: str, who: Owner, path: KeyPath, what: str) -> None:
        """Owners are put into words only on a collision."""
        prev = self.owners.setdefault(key, who)
        if prev != who:
            raise config_error(
                self.loaded.loc(path), f"{what} {key!r} is produced by both {_who(prev)} and {_who(who)}"
            )


@dataclass(frozen=True)
class _Spec:
    """One family, compiled: its cells to make, templates, tag rules and its parent's cells by shared axes."""

    name: str
    fam: Family
    image: str
    raw: list[RawCell]
    platforms: tuple[str, ...] | None
    templates: dict[str, list[tuple[str, Template]]]  # args, labels, annotations
    context: Template
    dockerfile: Template
    rules: TagRules
    shared: list[str]
    parents: dict[tuple[str, ...], list[Cell]]
    secrets: tuple[str, ...]

    @property
    def path(self) -> KeyPath:
        return ("images", self.name)


@paused
def plan(loaded: Loaded, meta: Meta, split_all: bool = False) -> Plan:
    """Expand ``loaded`` into every cell to build. Pure: reads no files, runs nothing.

    ``split_all`` builds every cell one target per platform (how a release is sharded by platform).
    """
    cfg = loaded.config
    _check_image(cfg.registry, loaded, ("registry",))
    run = _Run(loaded, meta, split_all, platform_list(list(cfg.platforms), loaded, ("platforms",)))
    families: list[FamilyPlan] = []
    cells: list[Cell] = []
    for name in family_order(loaded):
        spec = _compile_family(run, name, planned=len(cells))
        used_rules: set[int] = set()
        made = [_cell(run, spec, rc, used_rules) for rc in spec.raw]
        _check_rules_used(run, spec, used_rules)
        run.claim(name, (name, f"family {name}", ""), spec.path, "bake name")
        run.by_family[name] = made
        cells += made
        families.append(
            FamilyPlan(name=name, image=spec.image, base=spec.fam.base, targets=tuple(c.target for c in made))
        )
    return Plan(registry=cfg.registry, families=tuple(families), cells=tuple(cells), views=tuple(run.views.values()))


# --- per family -------------------------------------------------------------------------------


def _compile_family(run: _Run, name: str, planned: int) -> _Spec:
    """Check the family, expand its matrix and compile everything its cells share."""
    loaded = run.loaded
    fam = loaded.config.images[name]
    fpath: KeyPath = ("images", name)
    _check_family(name, fam, loaded)
    image = image_name(loaded.config.registry, name, fam.image)
    _check_image(image, loaded, (*fpath, "image") if fam.image else fpath)
    raw = expand(name, fam, loaded, planned)
    axes = list(raw[0].values) if raw else []
    known: dict[str, set[str]] = {a: set() for a in axes}
    for rc in raw:
        for a, v in rc.values.items():
            known[a].add(v)

    def compiled(key: str, mapping: dict[str, str]) -> list[tuple[str, Template]]:
        return [(k, compile_template(v, axes, loaded, (*fpath, key, k))) for k, v in mapping.items()]

    parent_cells = run.by_family.get(fam.base, []) if fam.base else []
    parent_axes = [k for k, _ in parent_cells[0].axes] if parent_cells else []
    shared = [a for a in axes if a in parent_axes]
    parents: dict[tuple[str, ...], list[Cell]] = {}
    for pc in parent_cells:
        pv = dict(pc.axes)
        parents.setdefault(tuple(pv[a] for a in shared), []).append(pc)
    return _Spec(
        name=name,
        fam=fam,
        image=image,
        raw=raw,
        platforms=platform_list(list(fam.platforms), loaded, (*fpath, "platforms")) if fam.platforms else None,
        templates={k: compiled(k, getattr(fam, k)) for k in ("args", "labels", "annotations")},
        context=compile_template(fam.context, axes, loaded, (*fpath, "context")),
        dockerfile=compile_template(fam.dockerfile, axes, loaded, (*fpath, "dockerfile")),
        rules=tag_rules(name, fam, known, loaded),
        shared=shared,
        parents=parents,
        secrets=secret_specs(fam, loaded),
    )


def _check_family(name: str, fam: Family, loaded: Loaded) -> None:
    """A bake-safe name, no arg both templated and per-platform, no secret passed as a build arg."""
    fpath: KeyPath = ("images", name)
    if TARGET_UNSAFE.search(name):
        raise config_error(loaded.key_loc(fpath), "family names may use only letters, digits, '-' and '_'")
    if "--" in name:
        raise config_error(loaded.key_loc(fpath), "'--' in a family name is reserved for the targets multibake derives")
    if name == "default":
        raise config_error(
            loaded.key_loc(fpath), "'default' is bake's group of every family; name the family otherwise"
        )
    for k in fam.platform_args:
        if k in fam.args:
            raise config_error(loaded.key_loc((*fpath, "platform_args", k)), f"{k} is also in args; keep one")
    for k in fam.args:
        if _SECRET_ARG.search(k):
            raise config_error(
                loaded.key_loc((*fpath, "args", k)),
                f"build arg {k!r} looks like a secret, and build args stay in the image's history",
                f"declare it under secrets: ({k.lower()}: {{env: {k}}}) and read it with RUN --mount=type=secret",
            )


def _check_rules_used(run: _Run, spec: _Spec, used: set[int]) -> None:
    for rule_no, (_, when, tpath) in enumerate(spec.rules):
        if when and rule_no not in used:
            # like an exclude that matches nothing: a typo would silently drop a floating tag
            raise config_error(run.loaded.key_loc((*tpath[:-1], "when")), "when matches no cell (a typo in a value?)")


def _check_image(ref: str, loaded: Loaded, path: KeyPath) -> None:
    problem = repository_problem(ref)
    if problem is None:
        return
    # a credential is never repeated; a long name is shortened
    shown = "" if problem == CREDENTIALS_ADVICE else f" {ref!r}" if len(ref) <= 100 else f" '{ref[:60]}…'"
    if path == ("registry",) and loaded.registry_override is not None:
        raise UsageError(
            f"{loaded.registry_override.named}: invalid registry{shown}: {problem}"
        )  # the override is wrong
    raise config_error(loaded.loc(path), f"invalid repository name{shown}: {problem}")


# --- per cell ---------------------------------------------------------------------------------


def _cell(run: _Run, spec: _Spec, rc: RawCell, used_rules: set[int]) -> Cell:
    values = rc.values
    me = (spec.name, values, "")
    target = cell_target(spec.name, values)
    run.claim(target, me, rc.origin, "target name")
    plats = rc.platforms or spec.platforms or run.default_platforms
    tags = _tags(run, spec, values, used_rules)
    refs = tuple(f"{spec.image}:{t}" for t in tags)
    for ref in refs:
        run.claim(ref, (spec.name, values, "tag"), (*spec.path, "tags"), "image reference")
    per_platform = _platform_tags(run, spec, values, tags, plats)
    parent, base_context = _parent(run, spec, rc, plats)
    labels = oci_labels(spec.name, tags[0], run.meta, run.loaded.config.source)
    if parent is not None:
        labels["org.opencontainers.image.base.name"] = parent.tags[0]
    labels.update((k, render(t, values)) for k, t in spec.templates["labels"])
    args = tuple((k, render(t, values)) for k, t in spec.templates["args"])
    split: tuple[PlatformTarget, ...] = ()
    if run.split_all or spec.fam.platform_args or (parent is not None and parent.split):
        split = split_targets(
            target=target,
            image=spec.image,
            plats=plats,
            args=args,
            platform_args=spec.fam.platform_args,
            parent=parent,
            cells=run.by_target,
            views=run.views,
            loaded=run.loaded,
            first_ref=refs[0],
        )
        for piece in split:
            run.claim(piece.target, me, rc.origin, "target name")
    cache_from, cache_to = cache_refs(run.loaded, target, refs[0])
    cell = Cell(
        family=spec.name,
        target=target,
        axes=tuple(values.items()),
        platforms=plats,
        context=render(spec.context, values),
        dockerfile=render(spec.dockerfile, values),
        stage=spec.fam.target,
        image=spec.image,
        args=args,
        labels=tuple(sorted(labels.items())),
        tags=refs,
        staging=f"{spec.image}:{bounded_tag('multibake-staging-' + target)}",
        platform_tags=per_platform,
        parent=parent.target if parent is not None else None,
        base_context=base_context,
        cache_from=cache_from,
        cache_to=cache_to,
        annotations=tuple((k, render(t, values)) for k, t in spec.templates["annotations"]),
        split=split,
        secrets=spec.secrets,
        attest=_attest(run, spec),
    )
    run.by_target[target] = cell
    return cell


def _attest(run: _Run, spec: _Spec) -> tuple[str, ...]:
    """The family's attest: over the release's; an SBOM is stamped with the release's time."""
    choice = attest.choice_of(spec.fam.attest).over(attest.choice_of(run.loaded.config.attest))
    return attest.specs(choice, attest.epoch(run.meta.created))


def _tags(run: _Run, spec: _Spec, values: dict[str, str], used_rules: set[int]) -> list[str]:
    """The cell's tags, in rule order, each once; every cell must get one."""
    tags: list[str] = []
    for rule_no, (tmpl, when, tpath) in enumerate(spec.rules):
        if matches(when, values):
            used_rules.add(rule_no)
            tag = render(tmpl, values)
            if not TAG.fullmatch(tag):
                raise config_error(
                    run.loaded.loc(tpath),
                    f"tag {tag[:200]!r} (cell {describe(values)}) is not a valid tag: "
                    "letters, digits, _ . - and at most 128 characters",
                )
            if tag not in tags:
                tags.append(tag)
    if not tags:
        raise config_error(run.loaded.loc((*spec.path, "tags")), f"cell {describe(values)} gets no tag")
    return tags


def _platform_tags(
    run: _Run, spec: _Spec, values: dict[str, str], tags: list[str], plats: tuple[str, ...]
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """platform → its single-platform references; each claimed, so one never equals another tag."""
    style = run.loaded.config.per_platform_tags
    if style is PerPlatformTags.NONE:
        return ()
    out: list[tuple[str, tuple[str, ...]]] = []
    path = (*spec.path, "tags")
    for p in plats:
        who = (spec.name, values, f"{p} tag")
        refs: list[str] = []
        for t in tags:
            pt = platform_tag(t, p, style)
            if len(pt) > MAX_TAG:
                raise config_error(run.loaded.loc(path), f"per-platform tag {pt!r} is too long")
            ref = f"{spec.image}:{pt}"
            if run.owners.setdefault(ref, who) is not who:  # the common case costs one dict call
                run.claim(ref, who, path, "image reference")
            refs.append(ref)
        out.append((p, tuple(refs)))
    return tuple(out)


def _check_ancestors(run: _Run, spec: _Spec, rc: RawCell, parent: Cell) -> None:
    """Every ancestor, not only the parent, must agree with the cell on the axes they share.

    A parent without an axis is built once for all its values, on one grandparent cell: a child
    tagged alpine=3.20 must not end up on a grandparent built for alpine=3.19.
    """
    chain: list[Cell] = []
    ancestor: Cell | None = parent
    while ancestor is not None:
        chain.append(ancestor)
        axes = dict(ancestor.axes)
        clash = [a for a, v in rc.values.items() if a in axes and axes[a] != v]
        if clash:
            path = " → ".join(f"{c.family} {c.target}" for c in chain)
            raise config_error(
                run.loaded.loc((*spec.path, "base")),
                f"cell {describe(rc.values)} builds on {path}, which has "
                f"{', '.join(f'{a}={axes[a]}' for a in clash)}: every ancestor must agree on shared axes",
            )
        ancestor = run.by_target.get(ancestor.parent) if ancestor.parent else None


def _parent(run: _Run, spec: _Spec, rc: RawCell, plats: tuple[str, ...]) -> tuple[Cell | None, str | None]:
    """The parent cell (matching on the shared axes) and the bake target ``FROM base`` resolves to."""
    fam, values, loaded = spec.fam, rc.values, run.loaded
    if not fam.base:
        return None, None
    found = spec.parents.get(tuple(values[a] for a in spec.shared), [])
    if len(found) != 1:
        on = f"on {', '.join(spec.shared)}" if spec.shared else "(no shared axes)"
        names = ", ".join(m.target for m in found) if found else "none"
        raise config_error(
            loaded.loc(rc.origin if rc.origin[-2:-1] == ("include",) else (*spec.path, "base")),
            f"cell {describe(values)} needs exactly one {fam.base} cell matching {on}; found {names}",
        )
    parent = found[0]
    _check_ancestors(run, spec, rc, parent)
    missing = [p for p in plats if p not in parent.platforms]
    if missing:
        # blame whatever chose the child's platforms
        if rc.platforms is not None:
            where: KeyPath = (*rc.origin, "platforms")
        else:
            where = (*spec.path, "platforms" if fam.platforms else "base")
        raise config_error(
            loaded.loc(where),
            f"cell {describe(values)} is built for {', '.join(missing)} but its base {parent.target} is not",
        )
    if run.split_all or fam.platform_args or parent.split:  # split: per-platform bases, no views
        return parent, None
    before = len(run.views)
    base_context = narrowed(parent, plats, run.by_target, run.views)
    if len(run.views) > before:  # new views (views are few: one per parent and platform subset)
        for view in list(run.views.values())[before:]:
            run.claim(view.target, ("", f"a view of {view.parent}", ""), rc.origin, "target name")
    return parent, base_context


def _who(owner: Owner) -> str:
    family, what, role = owner
    who = what if isinstance(what, str) else f"images.{family} cell {describe(what)}"
    return f"{who} ({role})" if role else who
