"""plan: Config → Plan, a pure function.

Expands each family's matrix (product minus exclude plus include), resolves templates, tags, per-platform
tags, platforms, parents and cache refs, and refuses anything ambiguous: duplicate references, unknown
axes, cycles, children built for platforms their parent lacks. Same input, same plan, same order.
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from multibake import platforms as arch
from multibake.config import CacheType, Family, KeyPath, Loaded, PerPlatformTags, TagRule
from multibake.errors import UsageError, config_error, did_you_mean

_TEMPLATE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_REPO_PATH = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TARGET_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_MAX_TAG = 128

Pairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class Meta:
    """Facts about the checkout, resolved once per run so every cell (and every CI shard) agrees."""

    created: str  # RFC 3339, from SOURCE_DATE_EPOCH or the commit time
    revision: str | None = None
    source: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class PlatformTarget:
    """One platform of a cell built as a bake target of its own.

    Bake cannot vary build args by platform inside one target, so a cell with per-platform args
    (or whose parent has them) is built one target per platform and multibake assembles the index.
    """

    target: str  # <cell target>--<short platform name>
    platform: str
    args: Pairs  # the cell's args plus the per-platform values
    base_context: str | None
    staging: str
    cache_from: tuple[str, ...]
    cache_to: tuple[str, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class Cell:
    """One image to build: a family at one point of its matrix."""

    family: str
    target: str
    axes: Pairs
    platforms: tuple[str, ...]
    context: str  # relative to the config's directory, POSIX separators
    dockerfile: str  # relative to the context
    stage: str | None
    image: str
    args: Pairs
    labels: Pairs
    tags: tuple[str, ...]  # full references of the multi-arch index
    staging: str  # private tag a push lands on first; public tags are pointed at it once it is complete
    platform_tags: tuple[tuple[str, tuple[str, ...]], ...]  # platform → single-platform references
    parent: str | None  # target name of the parent cell
    base_context: str | None  # bake target the child's `FROM base` resolves to (the parent or a view)
    cache_from: tuple[str, ...]
    cache_to: tuple[str, ...]
    annotations: Pairs = ()
    split: tuple[PlatformTarget, ...] = ()  # non-empty: built one target per platform
    base_image: str | None = None  # FROM base is this published image (its parent was not rebuilt)

    @property
    def bake_targets(self) -> tuple[str, ...]:
        """The bake targets that build this cell."""
        return tuple(t.target for t in self.split) if self.split else (self.target,)


@dataclass(frozen=True, kw_only=True, slots=True)
class View:
    """A parent cell narrowed to a child's platforms.

    Bake refuses a ``target:`` context built for other platforms than the child, so a child with
    fewer platforms than its parent gets the parent through a view: same build, fewer platforms,
    no tags, nothing pushed, no cache export (one cache ref has one writer).
    """

    target: str
    parent: str
    platforms: tuple[str, ...]
    base_context: str | None = None  # the parent's own base, narrowed alike (bake checks every link)


@dataclass(frozen=True, kw_only=True, slots=True)
class FamilyPlan:
    name: str
    image: str
    base: str | None
    targets: tuple[str, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    registry: str
    families: tuple[FamilyPlan, ...]
    cells: tuple[Cell, ...]
    views: tuple[View, ...] = ()
    _by_target: dict[str, Cell] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_target.update((c.target, c) for c in self.cells)

    def cell(self, target: str) -> Cell:
        return self._by_target[target]

    def ancestors(self, cell: Cell) -> Iterator[Cell]:
        while cell.parent is not None:
            cell = self._by_target[cell.parent]
            yield cell


# --- templates --------------------------------------------------------------------------------

Template = tuple[str | tuple[str], ...]  # literal text, or (axis,) to substitute


def _compile(text: str, axes: Sequence[str], loaded: Loaded, path: KeyPath) -> Template:
    parts: list[str | tuple[str]] = []
    pos = 0
    for m in _TEMPLATE.finditer(text):
        parts.append(text[pos : m.start()])
        token = m.group(0)
        if token in ("{{", "}}"):
            parts.append(token[0])
        else:
            name = m.group(1).strip()
            if name not in axes:
                known = ", ".join(axes) if axes else "none (the family has no matrix)"
                hint = did_you_mean(name, axes)
                raise config_error(
                    loaded.loc(path),
                    f"unknown axis {{{name}}} in {text!r}; axes: {known}",
                    hint,
                )
            parts.append((name,))
        pos = m.end()
    parts.append(text[pos:])
    return tuple(p for p in parts if p != "")


def _render(template: Template, values: dict[str, str]) -> str:
    return "".join(p if isinstance(p, str) else values[p[0]] for p in template)


# --- matrix -----------------------------------------------------------------------------------


def _as_set(value: str | list[str]) -> frozenset[str]:
    return frozenset([value]) if isinstance(value, str) else frozenset(value)


def _matches(cond: dict[str, frozenset[str]], values: dict[str, str]) -> bool:
    return all(values.get(k) in v for k, v in cond.items())


@dataclass(frozen=True, slots=True)
class _RawCell:
    values: dict[str, str]
    platforms: tuple[str, ...] | None
    origin: KeyPath


def _expand(name: str, fam: Family, loaded: Loaded) -> list[_RawCell]:
    base_path: KeyPath = ("images", name)
    axes = list(fam.matrix)
    for axis, axis_values in fam.matrix.items():
        if not axis_values:
            raise config_error(loaded.loc((*base_path, "matrix", axis)), f"axis {axis!r} has no values")
        for i, value in enumerate(axis_values):
            if value in axis_values[:i]:
                raise config_error(loaded.loc((*base_path, "matrix", axis, i)), f"axis {axis!r} lists {value!r} twice")
    cells: list[_RawCell] = []
    if axes:
        for combo in itertools.product(*fam.matrix.values()):
            cells.append(_RawCell(dict(zip(axes, combo, strict=True)), None, (*base_path, "matrix")))
    for i, entry in enumerate(fam.exclude):
        path = (*base_path, "exclude", i)
        unknown = [k for k in entry if k not in axes]
        if unknown:
            raise config_error(
                loaded.key_loc((*path, unknown[0])),
                f"exclude names unknown axis {unknown[0]!r}",
                did_you_mean(unknown[0], axes),
            )
        cond = {k: _as_set(v) for k, v in entry.items()}
        before = len(cells)
        cells = [c for c in cells if not _matches(cond, c.values)]
        if len(cells) == before:
            raise config_error(loaded.loc(path), "exclude matches no cell of the matrix (a typo in a value?)")
        if not cells and not fam.include:
            raise config_error(loaded.loc(path), "exclude removes every cell of the matrix: the family builds nothing")
    include_axes: list[str] | None = axes or None
    for i, entry in enumerate(fam.include):
        path = (*base_path, "include", i)
        plats: tuple[str, ...] | None = None
        values: dict[str, str] = {}
        for k, v in entry.items():
            if k == "platforms":
                plats = _platform_list(v, loaded, (*path, "platforms"))
            elif not isinstance(v, str):
                raise config_error(loaded.loc((*path, k)), "an include value must be a single string")
            else:
                values[k] = v
        if include_axes is None:
            include_axes = list(values)
        missing = [a for a in include_axes if a not in values]
        extra = [k for k in values if k not in include_axes]
        if extra:
            raise config_error(
                loaded.key_loc((*path, extra[0])),
                f"include names unknown axis {extra[0]!r}",
                did_you_mean(extra[0], include_axes),
            )
        if missing:
            raise config_error(loaded.loc(path), f"include must give every axis; missing {', '.join(missing)}")
        ordered = {a: values[a] for a in include_axes}
        dup = next((j for j, c in enumerate(cells) if c.values == ordered), None)
        if dup is not None:
            if plats is None:
                raise config_error(loaded.loc(path), "include repeats a cell the matrix already has")
            cells[dup] = _RawCell(ordered, plats, path)
        else:
            cells.append(_RawCell(ordered, plats, path))
    if not axes and not fam.include:
        cells.append(_RawCell({}, None, base_path))
    return cells


def _platform_list(value: str | list[str], loaded: Loaded, path: KeyPath) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    out: list[str] = []
    for i, item in enumerate(items):
        try:
            p = arch.normalize(item)
        except ValueError as exc:
            raise config_error(loaded.loc((*path, i)), str(exc)) from None
        if p in out:
            raise config_error(loaded.loc((*path, i)), f"platform {p} is listed twice")
        out.append(p)
    if not out:
        raise config_error(loaded.loc(path), "platforms must not be empty")
    return tuple(out)


# --- names ------------------------------------------------------------------------------------


def target_name(family: str, values: Iterable[str]) -> str:
    """A stable bake target name: ``alpine-s6-overlay-3_20-3_2_0_2``."""
    return "-".join([_TARGET_UNSAFE.sub("_", family), *(_TARGET_UNSAFE.sub("_", v) for v in values)])


def is_host(component: str) -> bool:
    """Whether the first component of an image reference names a registry host (docker's rule)."""
    return "." in component or ":" in component or component == "localhost"


def untagged(ref: str) -> str:
    """``ref`` without its tag: a colon after the last slash starts the tag (``host:port`` has none)."""
    return ref.rpartition(":")[0] if ref.rfind(":") > ref.rfind("/") else ref


def image_name(registry: str, family: str, image: str | None) -> str:
    if image is None:
        return f"{registry.rstrip('/')}/{family}"
    first = image.split("/", 1)[0]
    return image if "/" in image and is_host(first) else f"{registry.rstrip('/')}/{image}"


def _check_image(ref: str, loaded: Loaded, path: KeyPath) -> None:
    parts = ref.split("/")
    repo = parts[1:] if is_host(parts[0]) else parts
    for comp in repo:
        if not _REPO_PATH.fullmatch(comp):
            if path == ("registry",) and loaded.registry_source != "file":
                # the override is wrong, not the file
                raise UsageError(
                    f"{loaded.registry_source} {ref!r}: invalid repository name: component {comp!r} must be "
                    "lowercase letters, digits and . _ -"
                )
            raise config_error(
                loaded.loc(path),
                f"invalid repository name {ref!r}: component {comp!r} must be lowercase letters, digits and . _ -",
            )


def platform_tag(tag: str, platform: str, style: PerPlatformTags) -> str:
    if style is PerPlatformTags.PREFIX:
        return f"{arch.name(platform, arch.Scheme.BASHBREW)}-{tag}"
    return f"{tag}-{arch.name(platform, arch.Scheme.SHORT)}"


def _cache(loaded: Loaded, target: str, first_ref: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    cache = loaded.config.cache
    mode = f"mode={cache.mode}"
    if cache.type is CacheType.NONE:
        return (), ()
    if cache.type is CacheType.INLINE:
        return (f"type=registry,ref={first_ref}",), ("type=inline",)
    if cache.type is CacheType.GHA:
        return (f"type=gha,scope={target}",), (f"type=gha,scope={target},{mode},ignore-error=true",)
    if cache.type is CacheType.LOCAL:
        folder = f"{cache.directory.rstrip('/')}/{target}"
        return (f"type=local,src={folder}",), (f"type=local,dest={folder},{mode},ignore-error=true",)
    repo = cache.repository or f"{loaded.config.registry.rstrip('/')}/buildcache"
    ref = f"{repo}:{_bounded_tag(target)}"
    return (f"type=registry,ref={ref}",), (f"type=registry,ref={ref},{mode},ignore-error=true",)


# --- families in dependency order -------------------------------------------------------------


def _family_order(loaded: Loaded) -> list[str]:
    images = loaded.config.images
    for name, fam in images.items():
        if fam.base is not None and fam.base not in images:
            raise config_error(
                loaded.loc(("images", name, "base")),
                f"base {fam.base!r} is not a family in this file",
                did_you_mean(fam.base, images),
            )
        if fam.base == name:
            raise config_error(loaded.loc(("images", name, "base")), "a family cannot be its own base")
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, chain: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = " → ".join([*chain[chain.index(name) :], name])
            raise config_error(loaded.loc(("images", name, "base")), f"base cycle: {cycle}")
        state[name] = 1
        base = images[name].base
        if base is not None:
            visit(base, [*chain, name])
        state[name] = 2
        order.append(name)

    for name in images:
        visit(name, [])
    return order


# --- the plan ---------------------------------------------------------------------------------


def plan(loaded: Loaded, meta: Meta, split_all: bool = False) -> Plan:
    """Expand ``loaded`` into every cell to build. Pure: reads no files, runs nothing.

    ``split_all`` builds every cell one target per platform (how a release is sharded by platform).
    """
    cfg = loaded.config
    _check_image(cfg.registry, loaded, ("registry",))
    default_platforms = _platform_list(list(cfg.platforms), loaded, ("platforms",))
    cells: list[Cell] = []
    families: list[FamilyPlan] = []
    by_family: dict[str, list[Cell]] = {}
    views: dict[str, View] = {}
    by_target: dict[str, Cell] = {}
    owners: dict[
        str, tuple[str, dict[str, str] | str]
    ] = {}  # every reference and name → who made it, to refuse collisions

    # owners are kept as (family, cell values or a description) and put into words only on a collision
    def claim(key: str, who: tuple[str, dict[str, str] | str], path: KeyPath, what: str) -> None:
        prev = owners.setdefault(key, who)
        if prev != who:
            raise config_error(loaded.loc(path), f"{what} {key!r} is produced by both {_who(prev)} and {_who(who)}")

    for name in _family_order(loaded):
        fam = cfg.images[name]
        fpath: KeyPath = ("images", name)
        if _TARGET_UNSAFE.search(name):
            raise config_error(loaded.key_loc(fpath), "family names may use only letters, digits, '-' and '_'")
        if name == "default":
            raise config_error(
                loaded.key_loc(fpath), "'default' is bake's group of every family; name the family otherwise"
            )
        image = image_name(cfg.registry, name, fam.image)
        _check_image(image, loaded, (*fpath, "image") if fam.image else fpath)
        raw = _expand(name, fam, loaded)
        axes = list(raw[0].values) if raw else []
        fam_platforms = _platform_list(list(fam.platforms), loaded, (*fpath, "platforms")) if fam.platforms else None

        tmpl_args = [(k, _compile(v, axes, loaded, (*fpath, "args", k))) for k, v in fam.args.items()]
        tmpl_labels = [(k, _compile(v, axes, loaded, (*fpath, "labels", k))) for k, v in fam.labels.items()]
        tmpl_annotations = [
            (k, _compile(v, axes, loaded, (*fpath, "annotations", k))) for k, v in fam.annotations.items()
        ]
        for k in fam.platform_args:
            if k in fam.args:
                raise config_error(loaded.key_loc((*fpath, "platform_args", k)), f"{k} is also in args; keep one")
        tmpl_context = _compile(fam.context, axes, loaded, (*fpath, "context"))
        tmpl_dockerfile = _compile(fam.dockerfile, axes, loaded, (*fpath, "dockerfile"))
        rules = _tag_rules(name, fam, axes, loaded)
        parent_cells = by_family.get(fam.base, []) if fam.base else []
        parent_axes = [k for k, _ in parent_cells[0].axes] if parent_cells else []
        shared = [a for a in axes if a in parent_axes]
        parents_by_key: dict[tuple[str, ...], list[Cell]] = {}
        for pc in parent_cells:
            pv = dict(pc.axes)
            parents_by_key.setdefault(tuple(pv[a] for a in shared), []).append(pc)

        targets: list[str] = []
        used_rules: set[int] = set()
        for rc in raw:
            values = rc.values
            target = target_name(name, values.values())
            claim(target, (name, values), rc.origin, "target name")
            plats = rc.platforms or fam_platforms or default_platforms
            tags: list[str] = []
            for rule_no, (tmpl, when, tpath) in enumerate(rules):
                if _matches(when, values):
                    used_rules.add(rule_no)
                    tag = _render(tmpl, values)
                    if not _TAG.fullmatch(tag):
                        raise config_error(
                            loaded.loc(tpath),
                            f"tag {tag!r} (cell {_describe(values)}) is not a valid tag: "
                            "letters, digits, _ . - and at most 128 characters",
                        )
                    if tag not in tags:
                        tags.append(tag)
            if not tags:
                raise config_error(loaded.loc((*fpath, "tags")), f"cell {_describe(values)} gets no tag")
            refs = tuple(f"{image}:{t}" for t in tags)
            per_platform: list[tuple[str, tuple[str, ...]]] = []
            if cfg.per_platform_tags is not PerPlatformTags.NONE:
                for p in plats:
                    ptags = tuple(platform_tag(t, p, cfg.per_platform_tags) for t in tags)
                    for pt in ptags:
                        if len(pt) > _MAX_TAG:
                            raise config_error(loaded.loc((*fpath, "tags")), f"per-platform tag {pt!r} is too long")
                    per_platform.append((p, tuple(f"{image}:{t}" for t in ptags)))
            for ref in (*refs, *(r for _, rs in per_platform for r in rs)):
                claim(ref, (name, values), (*fpath, "tags"), "image reference")

            parent = base_context = None
            labels = _oci_labels(name, tags[0], meta, cfg.source)
            if fam.base:
                matches = parents_by_key.get(tuple(values[a] for a in shared), [])
                bpath = (*fpath, "base")
                if len(matches) != 1:
                    on = f"on {', '.join(shared)}" if shared else "(no shared axes)"
                    found = ", ".join(m.target for m in matches) if matches else "none"
                    raise config_error(
                        loaded.loc(rc.origin if rc.origin[-2:-1] == ("include",) else bpath),
                        f"cell {_describe(values)} needs exactly one {fam.base} cell matching {on}; found {found}",
                    )
                parent_cell = matches[0]
                missing = [p for p in plats if p not in parent_cell.platforms]
                if missing:
                    # blame whatever chose the child's platforms
                    if rc.platforms is not None:
                        where: KeyPath = (*rc.origin, "platforms")
                    elif fam.platforms:
                        where = (*fpath, "platforms")
                    else:
                        where = (*fpath, "base")
                    raise config_error(
                        loaded.loc(where),
                        f"cell {_describe(values)} is built for {', '.join(missing)} but its base "
                        f"{parent_cell.target} is not",
                    )
                parent = parent_cell.target
                if not (split_all or fam.platform_args or parent_cell.split):  # split: per-platform bases
                    before = set(views)
                    base_context = _narrowed(parent_cell, plats, by_target, views)
                    for name_ in sorted(set(views) - before):
                        claim(name_, ("", f"a view of {views[name_].parent}"), rc.origin, "target name")
                labels["org.opencontainers.image.base.name"] = parent_cell.tags[0]
            for k, t in tmpl_labels:
                labels[k] = _render(t, values)
            cache_from, cache_to = _cache(loaded, target, refs[0])
            staging = f"{image}:{_bounded_tag('multibake-staging-' + target)}"
            args = tuple((k, _render(t, values)) for k, t in tmpl_args)
            split: tuple[PlatformTarget, ...] = ()
            if split_all or fam.platform_args or (parent is not None and by_target[parent].split):
                split = _split(
                    target=target,
                    image=image,
                    plats=plats,
                    args=args,
                    platform_args=fam.platform_args,
                    parent=by_target.get(parent or ""),
                    cells=by_target,
                    views=views,
                    loaded=loaded,
                    first_ref=refs[0],
                )
                for piece in split:
                    claim(piece.target, (name, values), rc.origin, "target name")
            cell = Cell(
                family=name,
                target=target,
                axes=tuple(values.items()),
                platforms=plats,
                context=_render(tmpl_context, values),
                dockerfile=_render(tmpl_dockerfile, values),
                stage=fam.target,
                image=image,
                args=args,
                labels=tuple(sorted(labels.items())),
                tags=refs,
                staging=staging,
                platform_tags=tuple(per_platform),
                parent=parent,
                base_context=base_context,
                cache_from=cache_from,
                cache_to=cache_to,
                annotations=tuple((k, _render(t, values)) for k, t in tmpl_annotations),
                split=split,
            )
            cells.append(cell)
            by_target[target] = cell
            targets.append(target)
        by_family[name] = [c for c in cells if c.family == name]
        for rule_no, (_, when, tpath) in enumerate(rules):
            if when and rule_no not in used_rules:
                # like an exclude that matches nothing: a typo would silently drop a floating tag
                raise config_error(loaded.key_loc((*tpath[:-1], "when")), "when matches no cell (a typo in a value?)")
        if targets != [name]:  # a family without a matrix is its own single target, no group needed
            claim(name, (name, f"family {name}"), fpath, "bake name")
        families.append(FamilyPlan(name=name, image=image, base=fam.base, targets=tuple(targets)))
    return Plan(registry=cfg.registry, families=tuple(families), cells=tuple(cells), views=tuple(views.values()))


def _split(
    *,
    target: str,
    image: str,
    plats: tuple[str, ...],
    args: Pairs,
    platform_args: dict[str, arch.Scheme],
    parent: Cell | None,
    cells: dict[str, Cell],
    views: dict[str, View],
    loaded: Loaded,
    first_ref: str,
) -> tuple[PlatformTarget, ...]:
    """One target per platform; each FROM its parent's target for the same platform."""
    out = []
    for p in plats:
        name = f"{target}--{arch.name(p, arch.Scheme.SHORT)}"
        base = None
        if parent is not None:
            same = [t for t in parent.split if t.platform == p]
            base = same[0].target if same else _narrowed(parent, (p,), cells, views)
        cache_from, cache_to = _cache(loaded, name, first_ref)
        out.append(
            PlatformTarget(
                target=name,
                platform=p,
                args=args + tuple((k, arch.name(p, scheme)) for k, scheme in platform_args.items()),
                base_context=base,
                staging=f"{image}:{_bounded_tag('multibake-staging-' + name)}",
                cache_from=cache_from,
                cache_to=cache_to,
            )
        )
    return tuple(out)


def _bounded_tag(tag: str) -> str:
    """``tag`` if it fits the 128-character limit, else a prefix and a hash that stay unique."""
    if len(tag) <= _MAX_TAG:
        return tag
    return tag[:100] + "-" + hashlib.sha256(tag.encode()).hexdigest()[:16]


def _narrowed(parent: Cell, plats: tuple[str, ...], cells: dict[str, Cell], views: dict[str, View]) -> str:
    """The bake target a child built for ``plats`` uses as ``base``: the parent, or a view of it.

    Bake checks every ``target:`` link, so a view of a parent that has a base of its own takes a
    view of that base too, up the chain.
    """
    if parent.platforms == plats:
        return parent.target
    name = _view_name(parent.target, plats)
    if name not in views:
        grand = cells.get(parent.parent) if parent.parent else None
        base = _narrowed(grand, plats, cells, views) if grand is not None else None
        views[name] = View(target=name, parent=parent.target, platforms=plats, base_context=base)
    return name


def _view_name(parent: str, plats: tuple[str, ...]) -> str:
    return f"{parent}--" + "-".join(arch.name(p, arch.Scheme.SHORT) for p in plats)


def _who(owner: tuple[str, dict[str, str] | str]) -> str:
    family, what = owner
    return what if isinstance(what, str) else f"images.{family} cell {_describe(what)}"


def _describe(values: dict[str, str]) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in values.items()) + "}" if values else "{}"


def _tag_rules(
    name: str, fam: Family, axes: list[str], loaded: Loaded
) -> list[tuple[Template, dict[str, frozenset[str]], KeyPath]]:
    fpath: KeyPath = ("images", name)
    if not fam.tags:
        # no tags given: the axis values joined, or "latest" for a family without a matrix
        default = "-".join(f"{{{a}}}" for a in axes) or "latest"
        return [(_compile(default, axes, loaded, fpath), {}, fpath)]
    rules: list[tuple[Template, dict[str, frozenset[str]], KeyPath]] = []
    for i, rule in enumerate(fam.tags):
        path = (*fpath, "tags", i)
        text, when = (rule, {}) if isinstance(rule, str) else (rule.tag, rule.when)
        if isinstance(rule, TagRule):
            for k in when:
                if k not in axes:
                    raise config_error(
                        loaded.key_loc((*path, "when", k)),
                        f"when names unknown axis {k!r}",
                        did_you_mean(k, axes),
                    )
        tpath = (*path, "tag") if isinstance(rule, TagRule) else path
        rules.append((_compile(text, axes, loaded, tpath), {k: _as_set(v) for k, v in when.items()}, tpath))
    return rules


def _oci_labels(family: str, version: str, meta: Meta, source: str | None) -> dict[str, str]:
    labels = {
        "org.opencontainers.image.title": family,
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.created": meta.created,
    }
    if meta.revision:
        labels["org.opencontainers.image.revision"] = meta.revision
    if source or meta.source:
        labels["org.opencontainers.image.source"] = source or meta.source or ""
    return labels


# --- selection --------------------------------------------------------------------------------


def _families(p: Plan, keep: set[str] | dict[str, Cell]) -> tuple[FamilyPlan, ...]:
    """``p``'s families narrowed to the kept targets; families left empty are dropped."""
    return tuple(
        FamilyPlan(name=f.name, image=f.image, base=f.base, targets=tuple(t for t in f.targets if t in keep))
        for f in p.families
        if any(t in keep for t in f.targets)
    )


def _views_for(p: Plan, cells: Iterable[Cell]) -> tuple[View, ...]:
    """The views of ``p`` that ``cells`` still build FROM, directly or through another view."""
    used = {c.base_context for c in cells} | {piece.base_context for c in cells for piece in c.split}
    for view in reversed(p.views):  # a view's own base is created before it
        if view.target in used and view.base_context:
            used.add(view.base_context)
    return tuple(view for view in p.views if view.target in used)


def select_targets(p: Plan, targets: Iterable[str]) -> Plan:
    """Exactly the cells named (no ancestors added), in plan order."""
    keep = set(targets)
    cells = tuple(c for c in p.cells if c.target in keep)
    fams = _families(p, keep)
    return Plan(registry=p.registry, families=fams, cells=cells, views=())


def _miss_hint(p: Plan, pattern: str, conds: dict[str, str], names: list[str]) -> str:
    """Why a selector matched nothing: the name, or (when the name matches) the axis or the value."""
    named = [c for c in p.cells if not pattern or c.family == pattern or fnmatch.fnmatchcase(c.target, pattern)]
    if not named:
        hint = did_you_mean(pattern, names)
        return hint or "no family or target has that name (see `multibake plan`)"
    axes: dict[str, list[str]] = {}
    for c in named:
        for k, v in c.axes:
            if v not in axes.setdefault(k, []):
                axes[k].append(v)
    for k, v in conds.items():
        if k not in axes:
            return f"no axis {k!r}" + (f", {h}" if (h := did_you_mean(k, axes)) else f"; axes: {', '.join(axes)}")
        if v not in axes[k]:
            return f"{k} has no value {v!r}; values: {', '.join(axes[k])}"
    return "no cell has all of those values together"


def select(p: Plan, selectors: Sequence[str]) -> Plan:
    """The cells that ``selectors`` pick, plus their ancestors (bake needs every target it refers to).

    A selector is a family name, a target name or a glob on target names, optionally followed by
    ``:axis=value[,axis=value]`` to narrow by matrix values (``alpine-s6-nodejs:node=22``).
    """
    if not selectors:
        return p
    names = [f.name for f in p.families] + [c.target for c in p.cells]
    chosen: set[str] = set()
    for sel in selectors:
        pattern, _, filt = sel.partition(":")
        conds: dict[str, str] = {}
        for part in filter(None, filt.split(",")):
            k, eq, v = part.partition("=")
            if not eq:
                raise UsageError(f"selector {sel!r}: expected axis=value after ':', got {part!r}")
            conds[k.strip()] = v.strip()
        hit = [
            c
            for c in p.cells
            if (not pattern or c.family == pattern or fnmatch.fnmatchcase(c.target, pattern))
            and all(dict(c.axes).get(k) == v for k, v in conds.items())
        ]
        if not hit:
            raise UsageError(f"selector {sel!r} matches no cell; {_miss_hint(p, pattern, conds, names)}")
        chosen.update(c.target for c in hit)
    for c in p.cells:
        if c.target in chosen:
            chosen.update(a.target for a in p.ancestors(c))
    cells = tuple(c for c in p.cells if c.target in chosen)
    views = _views_for(p, cells)
    fams = _families(p, chosen)
    return Plan(registry=p.registry, families=fams, cells=cells, views=views)


def restrict(p: Plan, wanted: Sequence[str]) -> Plan:
    """The plan narrowed to ``wanted`` platforms; cells left with none are dropped.

    Views are recomputed: a child and its parent narrowed alike need none.
    """
    keep = set(wanted)
    cells: dict[str, Cell] = {}
    views: dict[str, View] = {}
    for c in p.cells:
        plats = tuple(x for x in c.platforms if x in keep)
        if not plats:
            continue
        base_context = None
        parent = cells.get(c.parent) if c.parent is not None else None
        if c.parent is not None and parent is None:
            continue  # its parent is not built for any wanted platform
        split = tuple(piece for piece in c.split if piece.platform in keep)
        if parent is not None and not split:
            base_context = _narrowed(parent, plats, cells, views)
        elif parent is not None and not parent.split:
            # per-platform pieces of a child whose parent is one multi-platform target: views again
            split = tuple(
                replace(piece, base_context=_narrowed(parent, (piece.platform,), cells, views)) for piece in split
            )
        cells[c.target] = replace(
            c,
            platforms=plats,
            platform_tags=tuple((x, refs) for x, refs in c.platform_tags if x in keep),
            base_context=base_context,
            split=split,
        )
    fams = _families(p, cells)
    return Plan(registry=p.registry, families=fams, cells=tuple(cells.values()), views=tuple(views.values()))


def with_labels(p: Plan, labels: dict[str, tuple[str, str]]) -> Plan:
    """The plan with one more label on the cells named in ``labels`` (target → (key, value))."""
    cells = tuple(
        replace(c, labels=tuple(sorted((*c.labels, labels[c.target])))) if c.target in labels else c for c in p.cells
    )
    return Plan(registry=p.registry, families=p.families, cells=cells, views=p.views)


def without(p: Plan, published: dict[str, str]) -> Plan:
    """The plan minus cells already published (target → image@digest); their children build FROM those."""
    cells: list[Cell] = []
    for cell in p.cells:
        if cell.target in published:
            continue
        if cell.parent in published:
            cell = replace(  # noqa: PLW2901
                cell,
                base_context=None,
                base_image=published[cell.parent],
                split=tuple(replace(piece, base_context=None) for piece in cell.split),
            )
        cells.append(cell)
    keep = {c.target for c in cells}
    fams = _families(p, keep)
    views = tuple(v for v in _views_for(p, cells) if v.parent in keep)
    return Plan(registry=p.registry, families=fams, cells=tuple(cells), views=views)
