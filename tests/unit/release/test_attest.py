"""Provenance attestations: attest: in platforms.yaml, its rendering into bake's attest attribute."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from multibake.bake import hcl
from multibake.config import schema as config
from multibake.errors import UsageError
from multibake.kinds import Provenance
from multibake.plan.attest import Choice
from multibake.plan.attest import specs as _specs
from multibake.plan.model import Plan
from multibake.release.resolve import attest_option
from tests.helpers import make_context, plan_text

CONFIG = """
registry: localhost:5000/t
platforms: [linux/amd64, linux/arm64]
{attest}
images:
  bb:
    context: bb
    matrix: {{v: ["1"]}}
  app:
    context: app
    base: bb
    platforms: [linux/arm64]
    matrix: {{v: ["1"]}}
    platform_args: {{ARCH: short}}
"""


def _plan(tmp_path: Path, attest: str = "") -> Plan:
    make_context(tmp_path, "bb")
    make_context(tmp_path, "app")
    return plan_text(tmp_path, CONFIG.format(attest=attest))


def test_unset_leaves_buildx_its_default(tmp_path: Path) -> None:
    p = _plan(tmp_path)
    assert all(c.attest == () for c in p.cells)
    assert "attest" not in hcl.render_hcl(p)  # the bake file stays as it was: buildx's own min provenance


@pytest.mark.parametrize(
    ("value", "spec"),
    [
        ("min", "type=provenance,mode=min"),
        ("max", "type=provenance,mode=max"),
        ("off", "type=provenance,disabled=true"),  # unquoted off stays the text "off", not YAML 1.1's false
    ],
)
def test_each_choice_is_rendered_into_every_target(tmp_path: Path, value: str, spec: str) -> None:
    p = _plan(tmp_path, f"attest: {{provenance: {value}}}")
    assert {c.attest for c in p.cells} == {(spec,)}
    text = hcl.render_hcl(p)
    # every bake target: the parent, the view of it the arm64-only child builds on, the per-platform piece
    targets = text.count('\ntarget "')
    assert targets == 3
    assert text.count(f'attest     = ["{spec}"]') == 2  # the view inherits its parent's
    assert text.count('inherits  = ["bb-1"]') == 1
    doc = json.loads(hcl.render_json(p))["target"]
    assert doc["bb-1"]["attest"] == [spec]
    assert doc["app-1--arm64"]["attest"] == [spec]


def attest_specs(provenance: Provenance | None) -> tuple[str, ...]:
    return _specs(Choice(provenance=provenance))


def test_attest_specs() -> None:
    assert attest_specs(None) == ()
    assert attest_specs(Provenance.MAX) == ("type=provenance,mode=max",)
    assert attest_specs(Provenance.OFF) == ("type=provenance,disabled=true",)


def test_the_schema_describes_attest() -> None:
    defs = config.Config.model_json_schema()["$defs"]
    assert defs["Provenance"]["enum"] == ["min", "max", "off"]
    provenance = defs["Attest"]["properties"]["provenance"]
    assert provenance["anyOf"] == [{"$ref": "#/$defs/Provenance"}, {"type": "null"}]
    assert provenance["default"] is None and "buildx's own default" in provenance["description"]


@pytest.mark.parametrize(
    ("items", "want"),
    [
        ((), None),
        (("provenance=max",), Provenance.MAX),
        (("provenance=min", "provenance=off"), Provenance.OFF),  # the last one given wins
    ],
)
def test_attest_option(items: tuple[str, ...], want: Provenance | None) -> None:
    assert attest_option(items).provenance is want


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("sbom", "expected provenance=min, provenance=max or provenance=off"),
        ("sbom=maybe", "sbom is on, off or generator=IMAGE"),
        ("provenance", "expected provenance=min"),
        ("provenance=full", "provenance is one of min, max, off"),
    ],
)
def test_a_bad_attest_option_is_a_usage_error(item: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        attest_option((item,))
