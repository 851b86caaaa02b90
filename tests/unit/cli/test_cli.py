"""cli.py: the commands that need no docker, driven through ``multibake.cli.run`` like a user would."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from multibake import __version__
from multibake.bake import hcl
from multibake.cli import app as cli
from multibake.cli import options, report
from multibake.config.load import load
from multibake.errors import EXIT_OK, EXIT_USAGE
from tests.helpers import SHIPPED_CONFIG, plan_file

CELL_KEYS = {
    "family",
    "target",
    "axes",
    "platforms",
    "context",
    "dockerfile",
    "stage",
    "args",
    "labels",
    "tags",
    "platform_tags",
    "parent",
    "base",
    "cache_from",
    "cache_to",
}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.run(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def shipped_copy(tmp_path: Path) -> Path:
    """The shipped platforms.yaml and its build contexts, copied into tmp_path (outside any git checkout)."""
    shutil.copy(SHIPPED_CONFIG, tmp_path / "platforms.yaml")
    shutil.copytree(SHIPPED_CONFIG.parent / "images", tmp_path / "images")
    return tmp_path / "platforms.yaml"


def test_validate(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "validate", "-c", str(SHIPPED_CONFIG))
    assert code == EXIT_OK, err
    assert out == f"{SHIPPED_CONFIG}: OK (2 families, 10 cells)\n"
    assert err == ""


def test_validate_uses_multibake_config_env(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MULTIBAKE_CONFIG", str(SHIPPED_CONFIG))
    code, out, _ = run(capsys, "validate")
    assert code == EXIT_OK
    assert "OK (2 families, 10 cells)" in out


def test_validate_default_config_in_cwd(
    capsys: pytest.CaptureFixture[str], shipped_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(shipped_copy.parent)
    code, out, _ = run(capsys, "validate")
    assert (code, out) == (EXIT_OK, "platforms.yaml: OK (2 families, 10 cells)\n")


def test_validate_missing_default_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "validate")
    assert code == EXIT_USAGE
    assert "platforms.yaml: no such file" in err


def test_validate_checks_contexts(capsys: pytest.CaptureFixture[str], shipped_copy: Path) -> None:
    shutil.rmtree(shipped_copy.parent / "images" / "alpine-s6-nodejs")
    code, _, err = run(capsys, "validate", "-c", str(shipped_copy))
    assert code == EXIT_USAGE
    assert "images.alpine-s6-nodejs.context: build context 'images/alpine-s6-nodejs' is not a directory" in err


def test_plan_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plan", "-c", str(SHIPPED_CONFIG))
    assert code == EXIT_OK
    lines = out.splitlines()
    assert lines[0].split() == [
        "FAMILY",
        "TARGET",
        "PLATFORMS",
        "ARGS",
        "TAGS",
        "PER-PLATFORM",
        "TAGS",
        "PARENT",
        "BASE",
    ]
    rows = lines[1:11]
    assert [r.split()[1] for r in rows] == [c.target for c in plan_file(SHIPPED_CONFIG).cells]
    node18 = rows[9].split()
    assert node18[:3] == ["alpine-s6-nodejs", "alpine-s6-nodejs-3_19-3_1_6_2-18", "amd64,arm64"]
    assert node18[-2:] == ["alpine-s6-overlay-3_19-3_1_6_2", "<alpine-s6-overlay>"]
    assert rows[0].split()[-1] == "alpine:3.19"  # the first FROM of the final stage, ARG substituted
    assert "3.20-3.2.0.2,3.20" in rows[2]
    assert "3.20-3.2.0.2-armv7" in rows[2]
    assert lines[-1] == (
        "10 cells in 2 families; images: localhost:5000/multibake/alpine-s6-nodejs, "
        "localhost:5000/multibake/alpine-s6-overlay"
    )


def test_plan_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plan", "--json", "-c", str(SHIPPED_CONFIG))
    assert code == EXIT_OK
    doc = json.loads(out)
    assert doc["schema"] == "multibake.plan/v1"
    assert doc["registry"] == "localhost:5000/multibake"
    assert [f["name"] for f in doc["families"]] == ["alpine-s6-overlay", "alpine-s6-nodejs"]
    assert set(doc["families"][1]) == {"name", "image", "base", "targets"}
    assert doc["families"][1]["base"] == "alpine-s6-overlay"
    assert len(doc["cells"]) == 10
    for cell in doc["cells"]:
        assert set(cell) == CELL_KEYS
    first = doc["cells"][0]
    assert first["target"] == "alpine-s6-overlay-3_19-3_1_6_2"
    assert first["axes"] == {"alpine": "3.19", "s6_overlay": "3.1.6.2"}
    assert first["tags"] == ["localhost:5000/multibake/alpine-s6-overlay:3.19-3.1.6.2"]
    assert first["platform_tags"]["linux/arm/v7"] == ["localhost:5000/multibake/alpine-s6-overlay:3.19-3.1.6.2-armv7"]
    assert first["parent"] is None
    assert first["stage"] is None
    assert doc["cells"][9]["parent"] == "alpine-s6-overlay-3_19-3_1_6_2"
    assert doc["cells"][9]["platforms"] == ["linux/amd64", "linux/arm64"]
    assert first["base"] == dict.fromkeys(first["platforms"], "alpine:3.19")
    assert doc["cells"][9]["base"] == {"linux/amd64": "<alpine-s6-overlay>", "linux/arm64": "<alpine-s6-overlay>"}


def test_plan_json_equals_report_of_the_plan(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    code, out, _ = run(capsys, "plan", "--json", "-c", str(SHIPPED_CONFIG))
    assert code == EXIT_OK
    doc = json.loads(out)
    assert {c["labels"]["org.opencontainers.image.created"] for c in doc["cells"]} == {"2023-11-14T22:13:20Z"}
    # the CLI's plan is the library's plan with the checkout's provenance
    from multibake.plan import planner as plan
    from multibake.preflight import bases
    from multibake.release import provenance

    loaded = load(SHIPPED_CONFIG)
    p = plan.plan(loaded, provenance.resolve(loaded.root))
    assert doc == report.plan_json(p, bases.plan_bases(p, loaded.root))


def test_plan_selectors_and_registry(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "plan", "--json", "-c", str(SHIPPED_CONFIG), "--registry", "r.example.com/x", "alpine-s6-nodejs:node=18"
    )
    assert code == EXIT_OK
    doc = json.loads(out)
    assert [c["target"] for c in doc["cells"]] == ["alpine-s6-overlay-3_19-3_1_6_2", "alpine-s6-nodejs-3_19-3_1_6_2-18"]
    assert doc["registry"] == "r.example.com/x"
    assert doc["cells"][1]["tags"] == ["r.example.com/x/alpine-s6-nodejs:18-alpine3.19"]


def test_plan_unknown_selector(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "plan", "-c", str(SHIPPED_CONFIG), "alpine-s6-overlai")
    assert code == EXIT_USAGE
    assert out == ""
    assert err == "multibake: error: selector 'alpine-s6-overlai' matches no cell; did you mean 'alpine-s6-overlay'?\n"


def test_hcl_to_stdout(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    code, out, err = run(capsys, "hcl", "-c", str(SHIPPED_CONFIG), "-o", "-")
    assert code == EXIT_OK
    assert err == ""
    assert out.startswith("# Generated by multibake from platforms.yaml.")
    assert 'target "alpine-s6-nodejs-3_19-3_1_6_2-18" {' in out
    assert 'target "alpine-s6-overlay-3_19-3_1_6_2--amd64-arm64" {' in out
    assert out.count("\ntarget ") == 11
    assert '"org.opencontainers.image.created"  = "2023-11-14T22:13:20Z"' in out


def test_hcl_json_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "hcl", "--format", "json", "-c", str(SHIPPED_CONFIG), "-o", "-")
    assert code == EXIT_OK
    doc = json.loads(out)
    p = plan_file(SHIPPED_CONFIG)
    assert list(doc["target"]) == [name for name, _ in hcl._targets(p)]
    assert doc["group"]["default"] == {"targets": ["alpine-s6-overlay", "alpine-s6-nodejs"]}


def test_hcl_writes_default_file_in_cwd(
    capsys: pytest.CaptureFixture[str], shipped_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(shipped_copy.parent)
    code, out, err = run(capsys, "hcl")
    assert code == EXIT_OK
    assert out == ""
    assert err == "wrote docker-bake.hcl (10 targets)\n"
    assert (shipped_copy.parent / "docker-bake.hcl").read_text(encoding="utf-8").startswith("# Generated by multibake")
    code, _, err = run(capsys, "hcl", "--format", "json")
    assert err == "wrote docker-bake.json (10 targets)\n"
    json.loads((shipped_copy.parent / "docker-bake.json").read_text(encoding="utf-8"))


def test_hcl_output_file_with_selector(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    dest = tmp_path / "out.hcl"
    code, _, err = run(capsys, "hcl", "-c", str(SHIPPED_CONFIG), "-o", str(dest), "alpine-s6-overlay-3_21-3_2_0_2")
    assert code == EXIT_OK
    assert err == f"wrote {dest} (1 targets)\n"
    text = dest.read_text(encoding="utf-8")
    assert text.count("\ntarget ") == 1


def test_hcl_bad_format(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "hcl", "--format", "xml", "-c", str(SHIPPED_CONFIG))
    assert code == EXIT_USAGE
    assert out == ""
    assert "'xml' is not one of 'hcl', 'json'" in err


def test_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "schema")
    assert code == EXIT_OK
    doc = json.loads(out)
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert doc["title"] == "multibake platforms.yaml"
    assert {"registry", "platforms", "images"} <= set(doc["properties"])
    assert doc["additionalProperties"] is False
    family = doc["$defs"]["Family"]
    assert {"context", "matrix", "include", "exclude", "tags", "base"} <= set(family["properties"])


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help(capsys: pytest.CaptureFixture[str], flag: str) -> None:
    code, out, _ = run(capsys, flag)
    assert code == EXIT_OK
    for command in ("validate", "plan", "hcl", "schema"):
        assert command in out


def test_command_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "hcl", "--help")
    assert code == EXIT_OK
    assert "--format" in out
    assert "--output" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert (code, out) == (EXIT_OK, f"multibake {__version__}\n")


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "frobnicate")
    assert code == EXIT_USAGE
    assert out == ""
    assert "No such command 'frobnicate'" in err
    assert "Traceback" not in err


def test_unknown_option(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "plan", "--bogus")
    assert code == EXIT_USAGE
    assert "No such option: --bogus" in err


def test_no_arguments_shows_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys)
    assert code == EXIT_USAGE
    assert "Usage" in out + err


def _interrupt(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(options, "load_plan", interrupted)


def test_keyboard_interrupt_exits_130(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    _interrupt(monkeypatch)
    code, out, err = run(capsys, "validate", "-c", str(SHIPPED_CONFIG))
    assert code == 130
    assert out == ""
    assert "Traceback" not in err


def test_keyboard_interrupt_says_so(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    _interrupt(monkeypatch)
    code, _, err = run(capsys, "validate", "-c", str(SHIPPED_CONFIG))
    assert code == 130
    assert err == "multibake: interrupted\n"


@pytest.mark.parametrize("source", ["--registry", "$MULTIBAKE_REGISTRY"])
def test_bad_registry_override_names_its_source(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    args = ["validate", "-c", str(SHIPPED_CONFIG)]
    if source == "--registry":
        args += ["--registry", "localhost:5000/Team"]
    else:
        monkeypatch.setenv("MULTIBAKE_REGISTRY", "localhost:5000/Team")
    code, _, err = run(capsys, *args)
    assert code == EXIT_USAGE
    assert source in err
    assert f"{SHIPPED_CONFIG}:" not in err, "the file's registry is not the culprit"


@pytest.mark.parametrize("args", [["--report", "r.html"], ["--push", "--dry-run", "--report", "r.html"]])
def test_build_report_needs_a_whole_release(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    assert cli.run(["build", "-c", str(SHIPPED_CONFIG), *args]) == EXIT_USAGE
    assert "--report needs --push" in capsys.readouterr().err


def test_diff_max_growth_must_be_a_limit(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(["diff", "-c", str(SHIPPED_CONFIG), "--max-growth", "lots"]) == EXIT_USAGE
    assert "--max-growth: 'lots' is not a size limit" in capsys.readouterr().err


def test_gc_and_report_are_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(["gc", "--help"]) == EXIT_OK
    out = capsys.readouterr().out
    assert all(flag in out for flag in ("--apply", "--grace", "--json"))
    assert cli.run(["report", "--help"]) == EXIT_OK
    out = capsys.readouterr().out
    assert all(flag in out for flag in ("--html", "--markdown", "--previous"))
