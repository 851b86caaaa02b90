"""The pieces plan.py assembles a cell from: names, tag rules, per-platform tags, cache refs, labels,
per-platform targets, secrets, and the families in dependency order. Each is a small pure function.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from multibake import platforms as arch
from multibake.config.load import Loaded
from multibake.config.schema import CacheType, Family, PerPlatformTags, TagRule
from multibake.config.yamlpos import KeyPath
from multibake.errors import config_error, did_you_mean
from multibake.plan.matrix import as_set, check_values
from multibake.plan.model import Cell, Meta, Pairs, PlatformTarget, View
from multibake.plan.templates import Template, compile_template
from multibake.plan.transforms import narrowed
from multibake.refs import bounded_tag

TARGET_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
SINGLE = "image"  # the one target of a family without a matrix is <family>--image: never a group's name
TagRules = list[tuple[Template, dict[str, frozenset[str]], KeyPath]]


def target_name(family: str, values: Iterable[str]) -> str:
    """A stable bake target name: ``alpine-s6-overlay-3_20-3_2_0_2``."""
    return "-".join([TARGET_UNSAFE.sub("_", family), *(TARGET_UNSAFE.sub("_", v) for v in values)])


def cell_target(family: str, values: dict[str, str]) -> str:
    """A cell's target; a family without a matrix gets ``<family>--image`` (its group is ``<family>``)."""
    return target_name(family, values.values()) if values else f"{family}--{SINGLE}"


def platform_tag(tag: str, platform: str, style: PerPlatformTags) -> str:
    if style is PerPlatformTags.PREFIX:
        return f"{arch.name(platform, arch.Scheme.BASHBREW)}-{tag}"
    return f"{tag}-{arch.name(platform, arch.Scheme.SHORT)}"


def describe(values: dict[str, str]) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in values.items()) + "}" if values else "{}"


def tag_rules(name: str, fam: Family, known: dict[str, set[str]], loaded: Loaded) -> TagRules:
    """Each tag template with its ``when`` condition; ``known`` holds every value each axis takes."""
    fpath: KeyPath = ("images", name)
    axes = list(known)
    if not fam.tags:
        # no tags given: the axis values joined, or "latest" for a family without a matrix
        default = "-".join(f"{{{a}}}" for a in axes) or "latest"
        return [(compile_template(default, axes, loaded, fpath), {}, fpath)]
    rules: TagRules = []
    for i, rule in enumerate(fam.tags):
        path = (*fpath, "tags", i)
        text, when = (rule, {}) if isinstance(rule, str) else (rule.tag, rule.when)
        check_values(when, known, loaded, (*path, "when"), "when")
        tpath = (*path, "tag") if isinstance(rule, TagRule) else path
        rules.append((compile_template(text, axes, loaded, tpath), {k: as_set(v) for k, v in when.items()}, tpath))
    return rules


def cache_refs(loaded: Loaded, target: str, first_ref: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
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
    ref = f"{repo}:{bounded_tag(target)}"
    return (f"type=registry,ref={ref}",), (f"type=registry,ref={ref},{mode},ignore-error=true",)


def oci_labels(family: str, version: str, meta: Meta, source: str | None) -> dict[str, str]:
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


def secret_specs(fam: Family, loaded: Loaded) -> tuple[str, ...]:
    """bake's ``secret`` entries: ``id=NAME,env=VAR`` or ``id=NAME,src=/abs/path`` (the value is never read)."""
    out = []
    for key, secret in fam.secrets.items():
        if secret.env is not None:
            out.append(f"id={key},env={secret.env}")
        else:
            out.append(f"id={key},src={os.path.normpath(loaded.root / (secret.file or ''))}")
    return tuple(out)


def split_targets(
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
            base = same[0].target if same else narrowed(parent, (p,), cells, views)
        cache_from, cache_to = cache_refs(loaded, name, first_ref)
        out.append(
            PlatformTarget(
                target=name,
                platform=p,
                args=args + tuple((k, arch.name(p, scheme)) for k, scheme in platform_args.items()),
                base_context=base,
                staging=f"{image}:{bounded_tag('multibake-staging-' + name)}",
                cache_from=cache_from,
                cache_to=cache_to,
            )
        )
    return tuple(out)


def family_order(loaded: Loaded) -> list[str]:
    """Family names, each after its base; an unknown base or a cycle is an error."""
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
    for start in images:
        chain: list[str] = []
        step: str | None = start
        while step is not None and state.get(step) != 2:
            if state.get(step) == 1:
                cycle = " → ".join([*chain[chain.index(step) :], step])
                raise config_error(loaded.loc(("images", step, "base")), f"base cycle: {cycle}")
            state[step] = 1
            chain.append(step)
            step = images[step].base
        for done in reversed(chain):  # a base before the families built on it
            state[done] = 2
            order.append(done)
    return order
