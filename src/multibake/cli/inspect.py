"""Commands that read what a release published: ``multibake sbom`` and ``multibake reproduce``.

Kept out of app.py (registered there): each imports its heavy modules only when it runs.
"""

from __future__ import annotations

import json
import time
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from multibake.cli.options import ConfigOpt, RegistryOpt, Selectors
from multibake.config.settings import DEFAULT_CONFIG

if TYPE_CHECKING:
    from collections.abc import Callable

    from multibake.compare.reproduce import Reproduced
    from multibake.compare.sbom import Found
    from multibake.registry.client import Api, Registry


class SbomFormat(StrEnum):
    SPDX_JSON = "spdx-json"  # the SPDX document as the generator wrote it
    TABLE = "table"  # one row per package: platform, kind, name, version


def sbom(
    ref: Annotated[
        str, typer.Argument(help="A published image: host/name:tag or host/name@sha256:…", show_default=False)
    ],
    platform: Annotated[
        str | None, typer.Option("--platform", help="One platform of a multi-arch image (linux/arm/v7, armv7…).")
    ] = None,
    output: Annotated[
        SbomFormat, typer.Option("--format", help="spdx-json: the SPDX document (one platform); table: the packages.")
    ] = SbomFormat.TABLE,
) -> int:
    """Print a published image's SBOM, read through the registry API from its attestation manifest.

    Exit 1 when an image has no SBOM attestation, 2 for bad input (spdx-json of several platforms).
    """
    from multibake.cli.options import registry_api
    from multibake.compare import sbom as sboms

    found = sboms.read(_registry(registry_api), ref, platform)
    if output is SbomFormat.SPDX_JSON:
        if len(found) != 1:
            from multibake.errors import UsageError

            names = ", ".join(f.platform for f in found)
            raise UsageError(f"{ref} has {len(found)} platforms ({names}): choose one with --platform")
        typer.echo(json.dumps(found[0].document, indent=2, sort_keys=True))
        return 0
    typer.echo(sbom_table(found), nl=False)
    return 0


def _registry(api: Callable[[], Api]) -> Registry:
    from multibake.config.schema import Retry
    from multibake.registry.client import Registry as Client
    from multibake.retry import RetryPolicy

    policy = RetryPolicy(limits=Retry(), sleep=time.sleep, echo=lambda line: typer.echo(line, err=True))
    return Client(policy=policy, api=api())


def sbom_table(found: list[Found]) -> str:
    """One row per package and platform, then a count per platform."""
    rows = [("PLATFORM", "TYPE", "NAME", "VERSION")]
    for f in found:
        rows += [(f.platform, p.kind, p.name, p.version or "-") for p in f.packages]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r[:3], widths, strict=True)) + "  " + r[3] for r in rows]
    lines.append("")
    lines += [f"{f.platform}: {len(f.packages)} packages ({f.image}, attestation in the {f.placement})" for f in found]
    return "\n".join(lines) + "\n"


def reproduce(
    selectors: Selectors = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    registry: RegistryOpt = None,
    builder: Annotated[str | None, typer.Option("--builder", help="The buildx builder to rebuild on.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON (shape in the README).")] = False,
) -> int:
    """Rebuild the published cells from scratch and compare each platform image with the registry's.

    No cache, the release's SOURCE_DATE_EPOCH, a private local output (OCI tars, no tag). Exit 0 when every
    platform image is identical, 1 otherwise (the report names config fields and files per layer), 2 for
    bad input.
    """
    from multibake.cli.options import tools
    from multibake.compare import reproduce as rep

    found = rep.reproduce(
        rep.Options(config=config, registry=registry, selectors=tuple(selectors or ()), builder=builder), tools()
    )
    typer.echo(json.dumps(reproduce_json(found), indent=2) if as_json else reproduce_text(found), nl=not as_json)
    return 0 if found.identical else 1


def reproduce_json(found: Reproduced) -> dict[str, Any]:
    return {
        "schema": "multibake.reproduce/v1",
        "identical": found.identical,
        "source_date_epoch": found.epoch,
        "builder": found.builder,
        "seconds": round(found.seconds, 1),
        "platforms": [
            {
                "target": p.target,
                "platform": p.platform,
                "identical": p.identical,
                "published": p.published,
                "rebuilt": p.rebuilt,
                "config": [{"field": f.field, "published": f.published, "rebuilt": f.rebuilt} for f in p.config],
                "layers": [
                    {
                        "index": la.index,
                        "published": la.published,
                        "rebuilt": la.rebuilt,
                        "files": [
                            {"path": f.path, "change": f.change, "fields": {k: [a, b] for k, a, b in f.fields}}
                            for f in la.files
                        ],
                    }
                    for la in p.layers
                ],
            }
            for p in found.platforms
        ],
    }


def reproduce_text(found: Reproduced) -> str:
    lines = [f"rebuilt on {found.builder} with SOURCE_DATE_EPOCH={found.epoch} in {found.seconds:.0f} s", ""]
    for p in found.platforms:
        if p.identical:
            lines.append(f"{p.target} {p.platform}: identical ({p.published})")
            continue
        lines.append(f"{p.target} {p.platform}: differs (published {p.published}, rebuilt {p.rebuilt or 'none'})")
        lines += [f"  config {f.field}: {f.published} → {f.rebuilt}" for f in p.config]
        for la in p.layers:
            lines.append(f"  layer {la.index}: {la.published or '-'} → {la.rebuilt or '-'}")
            if not la.files and la.published and la.rebuilt:
                lines.append("    the same files: the tar's encoding or its compression differs")
            for f in la.files:
                detail = ", ".join(f"{k} {a} → {b}" for k, a, b in f.fields)
                lines.append(f"    {f.change} {f.path}" + (f": {detail}" if detail else ""))
        if not p.config and not p.layers:
            lines.append("  the same config and layers in another manifest (media types or annotations)")
    same = sum(p.identical for p in found.platforms)
    lines += ["", f"{same} of {len(found.platforms)} platform images identical"]
    return "\n".join(lines)
