"""The release pipeline end to end with a fake docker client and an in-memory registry (no docker)."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from multibake.bake import display
from multibake.cli import app as cli
from multibake.cli import options, report
from multibake.config.load import load
from multibake.errors import BuildError, UsageError
from multibake.kinds import PlatformSize, Status, Step
from multibake.plan import buildid, planner
from multibake.plan.model import Plan
from multibake.registry.client import Registry
from multibake.registry.errors import RegistryError
from multibake.release import journal, publish, shards
from multibake.release import pipeline as release
from multibake.release.resolve import BuildOptions
from multibake.release.tools import Tools
from multibake.retry import RetryPolicy
from tests.helpers import FIXED_META, make_context, write_config
from tests.unit.fakes import FakeDocker, FakeRegistry, targets_of

REG = "127.0.0.1:5000/t"
PLATFORMS = ["linux/amd64", "linux/arm64", "linux/arm/v7"]
CONFIG = f"""
registry: {REG}
platforms: [linux/amd64, linux/arm64, linux/arm/v7]
retry: {{attempts: 3, initial_delay: 1, max_delay: 2}}
images:
  bb:
    context: bb
    matrix: {{busybox: ["1.35"]}}
  app:
    context: app
    base: bb
    matrix: {{version: ["1.0", "2.0"]}}
    args: {{VERSION: "{{version}}"}}
"""
BB, APP1, APP2 = "bb-1_35", "app-1_0", "app-2_0"


@dataclass
class Stack:
    """A checkout with a small release, a fake docker and a fake registry, and what the run said."""

    config: Path
    registry: FakeRegistry
    docker: FakeDocker
    echoed: list[str] = field(default_factory=list)
    said: list[str] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)
    docker_made: int = 0

    def tools(self) -> Tools:
        def make() -> object:
            self.docker_made += 1
            return self.docker

        return Tools(
            docker=make,  # type: ignore[arg-type]  # a duck-typed fake
            echo=self.echoed.append,
            say=self.said.append,
            sleep=self.sleeps.append,
            api=self.registry,
            bake_runner=lambda docker: docker.run_bake,  # type: ignore[attr-defined]
        )

    def build(self, **options: object) -> release.Built:
        opts = BuildOptions(config=self.config, result_dir=self.config.parent / "shards")
        return release.build(replace(opts, **options), self.tools())  # type: ignore[arg-type]

    def status(self, built: release.Built) -> dict[str, Status]:
        assert built.report is not None
        return {c.target: c.status for c in built.report.cells}


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    make_context(tmp_path, "bb")
    make_context(tmp_path, "app")
    config = write_config(tmp_path, CONFIG)
    loaded = load(config)
    plans = planner.plan(loaded, FIXED_META), planner.plan(loaded, FIXED_META, split_all=True)
    fake = FakeRegistry()
    yield Stack(config=config, registry=fake, docker=FakeDocker(registry=fake, targets=targets_of(*plans)))


def test_push_publishes_every_cell_then_verifies(stack: Stack) -> None:
    built = stack.build(push=True)
    assert built.ok
    assert stack.status(built) == {BB: Status.PUBLISHED, APP1: Status.PUBLISHED, APP2: Status.PUBLISHED}
    assert stack.docker.runs == [[BB, APP1, APP2]]
    assert stack.registry.platforms(f"{REG}/app:1.0") == sorted(PLATFORMS)
    assert stack.registry.held(f"{REG}/app:1.0-armv7")["config"]  # type: ignore[index]
    assert built.report is not None and built.report.cells[1].platform_digests.keys() == set(PLATFORMS)
    assert any(line.startswith("buildx 0.29.1, builder fake") for line in stack.said)


def test_a_push_says_its_retry_budget_before_it_starts(stack: Stack) -> None:
    assert stack.build(push=True).ok
    assert any("up to 3 attempts per step, waits up to 2 s each (4 s in all" in line for line in stack.said)


def test_the_summary_and_json_show_compressed_size_and_layers_per_platform(stack: Stack) -> None:
    built = stack.build(push=True)
    assert built.report is not None
    app = next(c for c in built.report.cells if c.target == APP1)
    assert app.sizes == {p: PlatformSize(platform=p, compressed=1234, layers=2) for p in PLATFORMS}
    checks = release.verify(stack.config, None, (), stack.tools())
    index = next(c for c in checks.checks or () if c.target == APP1 and c.is_index)
    assert sorted((s.platform, s.compressed, s.layers) for s in index.sizes) == sorted((p, 1234, 2) for p in PLATFORMS)


def _public_tags(fake: FakeRegistry) -> dict[tuple[str, str], str]:
    """(repository, tag) → the digest it points at, for every public tag (staging tags left out)."""
    return {
        key: hashlib.sha256(body).hexdigest()
        for key, (body, _) in fake.manifests.items()
        if not key[1].startswith(("sha256:", "multibake-staging-", "att-", "img-"))
        and "--" not in key[1]
        and not key[1].startswith(tuple(t + "-" for t in (BB, APP1, APP2)))
    }


def test_a_release_with_nothing_changed_moves_no_tag(stack: Stack) -> None:
    assert stack.build(push=True).ok
    before = _public_tags(stack.registry)
    assert f"{REG}/app:1.0" in {f"{repo}:{tag}" for repo, tag in before}
    written = len(stack.registry.writes)

    again = stack.build(push=True)  # the same images again; only their attestations are new
    assert again.ok
    assert set(stack.status(again).values()) == {Status.UNCHANGED}
    assert _public_tags(stack.registry) == before
    assert stack.registry.writes[written:] == [], "no public tag may be written"


def test_a_release_with_nothing_changed_reads_no_image_its_tags_already_gave(stack: Stack) -> None:
    """A per-platform tag's read is its platform image: neither promote nor verify's sizes read it again."""
    assert stack.build(push=True).ok
    read = len(stack.registry.manifest_reads)
    assert stack.build(push=True).ok
    by_digest = [ref for ref in stack.registry.manifest_reads[read:] if "@sha256:" in ref]
    images = [ref for ref in by_digest if "index" not in (stack.registry.get_manifest(ref) or (b"", ""))[1]]
    assert len(by_digest) == 3 and images == []  # each cell's staged index, and no platform image


def _staging_tags(fake: FakeRegistry) -> set[str]:
    return {tag for _, tag in fake.manifests if tag.startswith("multibake-staging-")}


def test_buildkit_drivers_push_by_digest_and_leave_no_staging_tag(stack: Stack) -> None:
    built = stack.build(push=True)
    assert built.ok and built.report is not None
    assert built.report.route == "push-by-digest"
    assert all(
        "push-by-digest=true,name-canonical=true" in a for argv in stack.docker.argvs for a in argv if ".output=" in a
    )
    assert _staging_tags(stack.registry) == set()
    assert built.report.nodes == {BB: "amd64", APP1: "amd64", APP2: "amd64"}


def test_the_docker_driver_stages_on_private_tags(stack: Stack) -> None:
    stack.docker.driver = "docker"
    built = stack.build(push=True)
    assert built.ok and built.report is not None
    assert built.report.route == "staging-tags"
    assert _staging_tags(stack.registry) == {f"multibake-staging-{t}" for t in (BB, APP1, APP2)}
    assert stack.status(built) == {BB: Status.PUBLISHED, APP1: Status.PUBLISHED, APP2: Status.PUBLISHED}


def test_a_transient_failure_rebakes_only_the_targets_not_yet_pushed(stack: Stack) -> None:
    stack.docker.transient = [1]  # BuildKit pushed bb, then the registry answered 503
    built = stack.build(push=True)
    assert built.ok and built.report is not None
    assert stack.docker.runs == [[BB, APP1, APP2], [APP1, APP2]]
    assert [r.outcome for r in built.report.runs] == ["transient", "ok"]
    assert len(built.report.retries) == 1 and "503" in built.report.retries[0]
    assert len(stack.sleeps) == 1 and 0 <= stack.sleeps[0] <= 1
    assert any("transient failure" in line and "retry 1/2" in line for line in stack.echoed)


def test_a_release_reports_how_long_each_step_took_in_its_json_and_its_last_line(stack: Stack) -> None:
    built = stack.build(push=True)
    assert built.ok and built.report is not None
    steps = built.report.steps
    assert list(steps) == [Step.PLAN, Step.PREFLIGHT, Step.BAKE, Step.PROMOTE, Step.VERIFY]
    assert all(s >= 0 for s in steps.values())
    doc = report.build_json(built.report)
    assert list(doc["steps"]) == ["plan", "preflight", "bake", "promote", "verify"]
    assert doc["own"] == pytest.approx(sum(v for k, v in doc["steps"].items() if k != "bake"), abs=0.01)
    last = report.build_table(built.report).splitlines()[-1]
    assert last.startswith("plan ") and " · bake " in last and last.endswith("s")
    with_start = replace(built.report, steps={Step.START: 0.25, **steps})
    assert report.build_table(with_start).splitlines()[-1].startswith("start 0.25s · plan ")


def test_a_shard_reports_its_steps_too(stack: Stack) -> None:
    built = stack.build(push=True, shard="family=app")
    assert built.report is not None and Step.PROMOTE in built.report.steps


def test_the_age_of_the_process_is_known_on_linux() -> None:
    age = options.process_age()
    assert 0 < age < 3600


def test_a_bake_that_makes_progress_is_retried_past_its_attempts(stack: Stack) -> None:
    # each failing run pushes one more image, or none: never three failed runs in a row without progress
    stack.docker.transient = [1, 0, 1, 0, 1]
    built = stack.build(push=True)
    assert built.ok, stack.echoed
    assert stack.docker.runs == [[BB, APP1, APP2], [APP1, APP2], [APP1, APP2], [APP2], [APP2]]
    counts = [line.split("retry ")[1].split(" ")[0] for line in stack.echoed if "transient failure" in line]
    assert counts == ["1/2", "2/2", "1/2", "2/2"], "the count starts again after a run that pushed something"


def test_when_only_the_second_push_failed_nothing_is_baked_again(stack: Stack) -> None:
    stack.docker.transient = [3]  # every image pushed by BuildKit; dockerd's own push failed
    built = stack.build(push=True)
    assert built.ok
    assert stack.docker.runs == [[BB, APP1, APP2]]
    assert any("every image was already pushed" in line for line in stack.echoed)


def test_retries_run_out_then_every_cell_fails_and_nothing_is_public(stack: Stack) -> None:
    stack.docker.transient = [0, 0, 0]
    built = stack.build(push=True)
    assert not built.ok
    assert len(stack.docker.runs) == 3 and len(stack.sleeps) == 2
    assert set(stack.status(built).values()) == {Status.FAILED}
    assert stack.registry.writes == []
    assert built.report is not None
    for cell in built.report.cells:  # one message naming the registry and the last error
        assert cell.error is not None and cell.error.startswith(
            "registry 127.0.0.1:5000: still failing after 3 attempts"
        )
        assert "503" in cell.error


def test_without_keep_going_a_failure_skips_the_rest(stack: Stack) -> None:
    stack.docker.broken = {APP1}
    built = stack.build(push=True)
    assert not built.ok and built.report is not None
    assert stack.status(built) == {BB: Status.SKIPPED, APP1: Status.FAILED, APP2: Status.SKIPPED}
    failed = built.report.cells[1]
    assert failed.error and "did not complete successfully" in failed.error
    assert failed.log_tail == (
        "#3 [app-1_0 1/1] RUN make",
        "#3 ERROR: process did not complete successfully: exit code: 1",
    )
    assert built.report.cells[0].error == "not built: another cell failed (use --keep-going)"
    assert stack.registry.writes == [], "a failed build leaves every public tag alone"


def test_keep_going_builds_and_publishes_every_other_cell(stack: Stack) -> None:
    stack.docker.broken = {APP1}
    built = stack.build(push=True, keep_going=True)
    assert not built.ok
    assert stack.status(built) == {BB: Status.PUBLISHED, APP1: Status.FAILED, APP2: Status.PUBLISHED}
    # bake went on past the failure and pushed bb and app 2.0: only app 1.0 is baked again
    assert stack.docker.runs == [[BB, APP1, APP2], [APP1]]
    assert stack.registry.held(f"{REG}/app:1.0") is None
    assert stack.registry.platforms(f"{REG}/app:2.0") == sorted(PLATFORMS)


def test_keep_going_skips_the_children_of_a_failed_base(stack: Stack) -> None:
    stack.docker.broken = {BB}
    built = stack.build(push=True, keep_going=True)
    assert built.report is not None
    assert stack.status(built) == {BB: Status.FAILED, APP1: Status.SKIPPED, APP2: Status.SKIPPED}
    assert built.report.cells[1].error == f"its base {BB} failed"


def test_skip_existing_builds_only_cells_whose_build_id_is_not_published(stack: Stack) -> None:
    ids = buildid.compute(planner.plan(load(stack.config), FIXED_META), stack.config.parent)
    stack.registry.publish(f"{REG}/bb:1.35", PLATFORMS, {buildid.LABEL: ids[BB]})
    stack.registry.publish(f"{REG}/app:1.0", PLATFORMS, {buildid.LABEL: "sha256:stale"})
    built = stack.build(push=True, skip_existing=True)
    assert built.ok
    assert stack.status(built) == {BB: Status.UP_TO_DATE, APP1: Status.PUBLISHED, APP2: Status.PUBLISHED}
    assert stack.docker.runs == [[APP1, APP2]]
    assert any(line.startswith(f"multibake: {BB} is up to date") for line in stack.said)


def test_skip_existing_with_nothing_changed_runs_no_bake(stack: Stack) -> None:
    ids = buildid.compute(planner.plan(load(stack.config), FIXED_META), stack.config.parent)
    for tag, target in ((f"{REG}/bb:1.35", BB), (f"{REG}/app:1.0", APP1), (f"{REG}/app:2.0", APP2)):
        stack.registry.publish(tag, PLATFORMS, {buildid.LABEL: ids[target]})
    built = stack.build(push=True, skip_existing=True)
    assert built.ok and built.report is not None and built.report.runs == ()
    assert set(stack.status(built).values()) == {Status.UP_TO_DATE}
    assert stack.docker.runs == []
    assert stack.docker_made == 0, "nothing to build: docker is not even asked about its builder"


def test_platform_shards_stage_then_publish_merges_them(stack: Stack) -> None:
    lock = stack.config.parent / "lock.json"
    resolved = shards.resolve(stack.config, None, None, check_files=True)
    shards.write_lock(shards.lock_file(resolved.plan, resolved.meta, "platforms.yaml"), lock)
    for platform in PLATFORMS:
        built = stack.build(push=True, shard=f"platform={platform}", lock=lock)
        assert built.ok
        assert set(stack.status(built).values()) == {Status.STAGED}
    assert stack.registry.writes == [], "shards write no public tag"
    results = (stack.config.parent / "shards",)
    checked = release.publish_shards(stack.config, None, lock, results, stack.tools())
    assert checked.ok and checked.checks
    assert stack.registry.platforms(f"{REG}/app:2.0") == sorted(PLATFORMS)


def test_a_shard_that_staged_says_ok_in_its_json_as_in_its_exit_code(stack: Stack) -> None:
    built = stack.build(push=True, shard="platform=linux/arm64")
    assert built.ok and built.report is not None
    assert set(stack.status(built).values()) == {Status.STAGED}
    assert report.build_json(built.report, ok=built.ok)["ok"] is True


def test_publish_from_shards_with_a_registry_failing_while_tags_move_still_reports(stack: Stack) -> None:
    for platform in PLATFORMS:
        assert stack.build(push=True, shard=f"platform={platform}").ok
    stack.registry.refuse_tags = RegistryError("writing x: HTTP 503", transient=True)
    checked = release.publish_shards(stack.config, None, None, (stack.config.parent / "shards",), stack.tools())
    assert not checked.ok and checked.checks, "a table and --json, not only an error line"
    assert any("rerun to finish" in line for line in stack.said)
    stack.registry.refuse_tags = None
    again = release.publish_shards(stack.config, None, None, (stack.config.parent / "shards",), stack.tools())
    assert again.ok, "the rerun finishes"


def test_publish_refuses_an_incomplete_set_of_shards(stack: Stack) -> None:
    for platform in PLATFORMS[:2]:
        assert stack.build(push=True, shard=f"platform={platform}").ok
    checked = release.publish_shards(stack.config, None, None, (stack.config.parent / "shards",), stack.tools())
    assert not checked.ok and checked.checks is None
    assert any("no shard built linux/arm/v7" in line for line in stack.said)
    assert stack.registry.writes == []


def test_a_family_shard_stages_its_cells_and_their_parents_stay_unpublished(stack: Stack) -> None:
    built = stack.build(push=True, shard="family=app")
    assert built.ok
    doc = shards.read_model(stack.config.parent / "shards" / "family-app.json", shards.ShardResult, "shard result")
    assert set(doc.cells) == {APP1, APP2} and doc.failed == []


def _promote_setup(stack: Stack) -> tuple[Registry, Plan, dict[str, list[str]]]:
    p = planner.plan(load(stack.config), FIXED_META)
    sources = {}
    for cell in p.cells:
        platforms = PLATFORMS[:2] if cell.target == APP1 else PLATFORMS  # app 1.0 staged without arm/v7
        stack.registry.publish(cell.staging, platforms)
        sources[cell.target] = [cell.staging]
    return Registry(policy=RetryPolicy(sleep=stack.sleeps.append), api=stack.registry), p, sources


def test_promote_refuses_a_release_with_an_incomplete_staged_index(stack: Stack) -> None:
    reg, p, sources = _promote_setup(stack)
    published = publish.promote(reg, p, sources, partial=False)
    assert published.promoted == ()
    assert "missing linux/arm/v7" in published.held_back[APP1]
    assert published.held_back[BB] == "the release is incomplete, so no public tag was changed"
    assert stack.registry.writes == []


def test_partial_promote_publishes_the_complete_cells_only(stack: Stack) -> None:
    reg, p, sources = _promote_setup(stack)
    published = publish.promote(reg, p, sources, partial=True)
    assert published.promoted == (BB, APP2) and APP1 in published.held_back
    assert stack.registry.held(f"{REG}/app:1.0") is None


def test_a_registry_failing_while_tags_move_is_a_failed_report_not_a_crash(stack: Stack) -> None:
    stack.registry.refuse_writes = RegistryError("writing x: HTTP 503", transient=True)
    built = stack.build(push=True)
    assert not built.ok and built.report is not None, "the report is still there for --json"
    statuses = stack.status(built)
    assert set(statuses.values()) == {Status.FAILED}
    errors = [cell.error or "" for cell in built.report.cells]
    assert all("still failing after" in e and "rerun to finish" in e for e in errors), errors
    assert any(": publishing: " in line for line in stack.said)


def test_a_tag_that_finally_fails_fails_its_own_cell_only(stack: Stack) -> None:
    flaky = f"{REG}/app:2.0-armv7"
    stack.registry.refuse_refs[flaky] = RegistryError(f"writing {flaky}: HTTP 500", transient=True)
    built = stack.build(push=True)
    assert not built.ok and built.report is not None
    statuses = stack.status(built)
    assert statuses == {BB: Status.PUBLISHED, APP1: Status.PUBLISHED, APP2: Status.FAILED}, statuses
    failed = next(c for c in built.report.cells if c.target == APP2)
    assert failed.error is not None and flaky in failed.error and "rerun to finish" in failed.error
    assert all(c.error is None for c in built.report.cells if c.target != APP2)
    assert stack.registry.held(f"{REG}/app:1.0") is not None, "the other cells' tags moved"
    assert stack.registry.held(flaky) is None


def test_verify_finds_a_per_platform_tag_of_the_wrong_platform(stack: Stack) -> None:
    assert stack.build(push=True).ok
    stack.registry.image(f"{REG}/app:2.0-armv7", "linux/arm64")
    checked = release.verify(stack.config, None, ("app",), stack.tools())
    assert not checked.ok and checked.checks is not None
    bad = [c for c in checked.checks if not c.ok]
    assert [(c.ref, c.problem) for c in bad] == [(f"{REG}/app:2.0-armv7", "its image is linux/arm64")]


def test_dry_run_makes_no_docker_client(stack: Stack) -> None:
    built = stack.build(dry_run=True, push=True)
    assert built.ok and built.dry_run is not None and built.report is None
    assert built.dry_run.command.endswith(f"{BB} {APP1} {APP2}")
    assert "docker buildx bake --file" in built.dry_run.command
    assert stack.docker_made == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"push": True, "load": True}, "choose one of --push, --load and --output"),
        ({"sets": ("nodot=1",)}, "expected target.key=value"),
        ({"shard": "platform=linux/amd64"}, "add --push"),
        ({"push": True, "platforms": ("arm64",)}, "missing platforms"),
        ({"platforms": ("linux/s390x",)}, "unknown platform"),
        ({"platforms": ("armv6",)}, "no selected cell is planned for linux/arm/v6"),
        ({"push": True, "shard": "zone=1"}, "expected platform=P, family=NAME or cell=TARGET"),
    ],
)
def test_bad_usage_is_refused_before_docker_is_touched(stack: Stack, options: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        stack.build(**options)
    assert stack.docker_made == 0


def test_a_platform_subset_builds_without_push(stack: Stack) -> None:
    built = stack.build(platforms=("arm64",))
    assert built.ok and built.report is not None
    assert {c.platforms for c in built.report.cells} == {("linux/arm64",)}
    assert stack.status(built)[APP1] is Status.BUILT


def test_debug_logs_each_bake_command(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="multibake.docker"):
        assert stack.build().ok
    assert any(r.getMessage().startswith("Running command: docker buildx bake --file") for r in caplog.records)


def test_the_cli_renders_a_build_as_json_in_the_documented_shape(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(options, "tools", lambda progress=None: stack.tools())
    stack.docker.broken = {APP1}
    code = cli.run(["build", "--push", "--keep-going", "--json", "-c", str(stack.config)])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1 and doc["schema"] == "multibake.build/v1" and doc["ok"] is False and doc["mode"] == "push"
    assert [c["status"] for c in doc["cells"]] == ["published", "failed", "published"]
    assert list(doc["cells"][0]) == [
        "target",
        "family",
        "status",
        "platforms",
        "duration",
        "digest",
        "platform_digests",
        "sizes",
        "tags",
        "error",
        "log_tail",
        "signatures",
    ]
    assert [run["outcome"] for run in doc["bake_runs"]] == ["permanent", "permanent"]
    assert doc["builder"] == {"name": "fake", "driver": "remote", "buildx": "0.29.1", "platforms": sorted(PLATFORMS)}


def test_a_watched_build_says_each_cell_as_it_finishes(stack: Stack) -> None:
    out: list[str] = []
    plain = display.Plain(out.append, interval=0, clock=lambda: 0.0)
    tools = replace(stack.tools(), echo=plain.echo, watch=plain.watch)
    stack.docker.broken = {APP1}
    built = release.build(
        BuildOptions(config=stack.config, push=True, keep_going=True, result_dir=stack.config.parent), tools
    )
    assert not built.ok
    said = [line for line in out if line.startswith(("multibake: done", "multibake: failed", "multibake: cached"))]
    # the first bake run fails on app-1_0 after pushing the others, which are done (exported) when it
    # ends; --keep-going then builds app-1_0 alone, which fails again
    assert said == [
        f"multibake: failed {APP1} (linux/amd64, linux/arm64, linux/arm/v7) in 0.0s",
        f"multibake: done {BB} (linux/amd64, linux/arm64, linux/arm/v7) in 0.0s",
        f"multibake: done {APP2} (linux/amd64, linux/arm64, linux/arm/v7) in 0.0s",
        f"multibake: failed {APP1} (linux/amd64, linux/arm64, linux/arm/v7) in 0.0s",
    ]
    assert stack.docker.runs == [[BB, APP1, APP2], [APP1]]


@dataclass
class Logins:
    """docker login, as the release runs it with credentials from the environment (no docker)."""

    returncode: int = 0
    calls: list[tuple[list[str], str]] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)  # the private DOCKER_CONFIGs docker was given

    def run(self, argv: Sequence[str], stdin: str) -> subprocess.CompletedProcess[str]:
        self.calls.append((list(argv), stdin))
        return subprocess.CompletedProcess(argv, self.returncode, "", "login attempt failed with status: 401")

    def configured(self, docker: object, folder: Path) -> object:
        self.folders.append(folder)
        assert json.loads((folder / "config.json").read_text())["credHelpers"] == {"127.0.0.1:5000": ""}
        return docker


def _with_logins(stack: Stack, logins: Logins, monkeypatch: pytest.MonkeyPatch, password: str) -> Tools:
    monkeypatch.setenv("DOCKER_CONFIG", str(stack.config.parent / "docker-home"))
    monkeypatch.setenv("MULTIBAKE_REGISTRY_USER", "ci")
    monkeypatch.setenv("MULTIBAKE_REGISTRY_PASSWORD", password)
    return replace(stack.tools(), login_runner=logins.run, configured=logins.configured)  # type: ignore[arg-type]


def test_environment_credentials_log_docker_in_once_into_a_config_of_the_run(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    logins = Logins()
    tools = _with_logins(stack, logins, monkeypatch, "s3cret")
    opts = BuildOptions(config=stack.config, push=True)
    built = release.build(opts, tools)
    assert built.ok and stack.docker.runs == [[BB, APP1, APP2]]
    [(argv, stdin)] = logins.calls
    assert argv == ["docker", "login", "--username", "ci", "--password-stdin", "127.0.0.1:5000"]
    assert stdin == "s3cret\n"
    [folder] = logins.folders
    assert not folder.exists(), "the private DOCKER_CONFIG is removed when the run ends"
    assert (stack.config.parent / "docker-home" / "buildx").is_dir()
    assert "multibake: docker logged in to 127.0.0.1:5000 as ci ($MULTIBAKE_REGISTRY_USER)" in stack.said


def test_a_refused_login_ends_the_release_before_anything_is_built(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    logins = Logins(returncode=1)
    tools = _with_logins(stack, logins, monkeypatch, "wrong")
    with pytest.raises(BuildError, match=r"^registry 127\.0\.0\.1:5000: docker login as ci .*401"):
        release.build(BuildOptions(config=stack.config, push=True), tools)
    assert stack.docker.runs == [] and stack.registry.writes == []
    assert len(logins.calls) == 1, "a refused password is not retried"
    assert not logins.folders[0].exists()


def test_verify_with_environment_credentials_runs_no_docker(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    assert release.build(BuildOptions(config=stack.config, push=True), stack.tools()).ok
    logins = Logins()
    tools = _with_logins(stack, logins, monkeypatch, "s3cret")
    made = stack.docker_made
    checked = release.verify(stack.config, None, (), tools)
    assert checked.ok and logins.calls == [] and stack.docker_made == made


ATTESTED = CONFIG.replace("retry:", "attest: {provenance: min}\nretry:")


def test_attest_on_the_command_line_beats_platforms_yaml(stack: Stack) -> None:
    stack.config.write_text(ATTESTED, encoding="utf-8")
    from_file = stack.build(dry_run=True, push=True)
    assert from_file.dry_run is not None
    assert from_file.dry_run.bake_file.count('attest     = ["type=provenance,mode=min"]') == 3
    flag = stack.build(dry_run=True, push=True, attest=("provenance=off",))
    assert flag.dry_run is not None
    assert "mode=min" not in flag.dry_run.bake_file
    assert flag.dry_run.bake_file.count('attest     = ["type=provenance,disabled=true"]') == 3
    # a platform shard plans its cells anew, one target per platform: the flag still wins there
    shard = stack.build(dry_run=True, push=True, shard="platform=linux/arm64", attest=("provenance=max",))
    assert shard.dry_run is not None
    assert "mode=min" not in shard.dry_run.bake_file and "type=provenance,mode=max" in shard.dry_run.bake_file


def test_the_cli_passes_attest_to_the_bake_file(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(options, "tools", lambda progress=None: stack.tools())
    code = cli.run(["build", "--push", "--dry-run", "--attest", "provenance=max", "-c", str(stack.config)])
    assert code == 0
    assert capsys.readouterr().out.count('attest     = ["type=provenance,mode=max"]') == 3
    assert cli.run(["build", "--dry-run", "--attest", "provenance=yes", "-c", str(stack.config)]) == 2
    assert "provenance is one of min, max, off" in capsys.readouterr().err


def test_provenance_turned_off_moves_the_tags_of_unchanged_images(stack: Stack) -> None:
    """The same platform images without their attestation manifests: the tags move (a registry that refuses
    attestation manifests is why one turns them off); the same again moves nothing."""
    assert stack.build(push=True).ok
    index = stack.registry.held(f"{REG}/app:1.0") or {}
    assert sum(m["platform"]["os"] == "unknown" for m in index["manifests"]) == 1
    stack.docker.attestations = False
    off = stack.build(push=True)
    assert set(stack.status(off).values()) == {Status.PUBLISHED}
    index = stack.registry.held(f"{REG}/app:1.0") or {}
    assert [m["platform"]["os"] for m in index["manifests"]] == ["linux"] * 3
    again = stack.build(push=True)
    assert set(stack.status(again).values()) == {Status.UNCHANGED}


# --- the release journal and multibake diff ---------------------------------------------------------


def _diff(stack: Stack, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.run(["diff", "-c", str(stack.config), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def cli_stack(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:
    monkeypatch.setattr(options, "tools", lambda progress=None: stack.tools())
    return stack


def test_each_release_that_moves_tags_is_recorded_with_before_and_after(cli_stack: Stack) -> None:
    stack = cli_stack
    assert stack.build(push=True).ok
    first = journal.last(stack.config.parent)
    assert first is not None and first.registry == REG
    assert {t.before for t in first.tags} == {None}, "the first release made every tag"
    app1 = {t.ref: t for t in first.tags if t.target == APP1}
    assert set(app1) == {f"{REG}/app:1.0", *(f"{REG}/app:1.0-{s}" for s in ("amd64", "arm64", "armv7"))}
    assert app1[f"{REG}/app:1.0"].kind == "index" and app1[f"{REG}/app:1.0-armv7"].kind == "linux/arm/v7"
    assert first.build_ids.keys() == {BB, APP1, APP2}
    assert any("recorded in" in line and "last.json" in line for line in stack.said)

    assert stack.build(push=True).ok  # nothing changed: the journal keeps the release that did
    assert journal.last(stack.config.parent) == first

    stack.docker.grown = {APP1: 1}
    assert stack.build(push=True).ok
    second = journal.last(stack.config.parent)
    assert second is not None and [t.ref for t in second.moved] == sorted(app1, key=list(app1).index)
    moved = second.moved[0]
    assert moved.before == app1[moved.ref].after and moved.after != moved.before


def test_diff_previous_shows_the_changed_cell_only(cli_stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    stack = cli_stack
    assert stack.build(push=True).ok
    stack.docker.grown = {APP1: 1}
    assert stack.build(push=True).ok
    code, out, _ = _diff(stack, "--previous", "--json", capsys=capsys)
    assert code == 0
    doc = json.loads(out)
    assert doc["mode"] == "previous" and doc["changed"] is True
    # every tag of the release is compared (bb and app 2.0 were released unchanged), the changed ones shown
    assert doc["summary"] == {"compared": 12, "changed": 4, "new": 0, "removed": 0, "unchanged": 8}
    rows = {(t["ref"], p["platform"]): p for t in doc["tags"] for p in t["platforms"]}
    assert len(rows) == 6  # app:1.0 on three platforms, and each per-platform tag
    assert {(p["layers_delta"], p["bytes_delta"], p["change"]) for p in rows.values()} == {(1, 100, "changed")}
    # the table, and --exit-code
    code, out, _ = _diff(stack, "--exit-code", capsys=capsys)  # --previous is the default once a release is recorded
    assert code == 1
    assert "app:1.0-armv7  armv7     changed  1.2 kB → 1.3 kB (+100 B)  2 → 3 (+1)" in out
    assert out.endswith("12 tags compared: 4 changed, 0 new, 0 removed, 8 unchanged (hidden; --all shows them)\n")


def test_diff_against_another_namespace(cli_stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    stack = cli_stack
    assert stack.build(push=True).ok
    prod = "127.0.0.1:5000/prod"
    for (repo, ref), (body, media) in list(stack.registry.manifests.items()):  # prod holds this release
        stack.registry.manifests[(repo.replace(REG, prod), ref)] = (body, media)
    stack.registry.index(f"{prod}/app:0.9", {})  # only prod has it
    stack.docker.grown = {APP2: 2}
    assert stack.build(push=True).ok
    code, out, _ = _diff(stack, "--against", prod, "--json", "--all", capsys=capsys)
    assert code == 0
    doc = json.loads(out)
    change = {t["ref"].removeprefix(REG + "/"): t["change"] for t in doc["tags"]}
    assert change["app:0.9"] == "removed"
    assert change["app:2.0"] == change["app:2.0-arm64"] == "changed"
    assert change["app:1.0"] == change["bb:1.35"] == "unchanged"
    assert not [k for k in change if "staging" in k]
    two = next(t for t in doc["tags"] if t["ref"] == f"{REG}/app:2.0")
    assert two["old_ref"] == f"{prod}/app:2.0"
    assert {p["layers_delta"] for p in two["platforms"]} == {2}
    # a selection narrows the comparison to those cells (and their parents)
    code, out, _ = _diff(stack, "app:version=1.0", "--against", prod, "--json", "--all", capsys=capsys)
    assert {t["ref"].rsplit("/", 1)[1].split(":")[0] for t in json.loads(out)["tags"]} == {"app", "bb"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "nothing to compare with: no release recorded in"),
        (("--previous",), "no release recorded in"),
        (("--previous", "--against", "127.0.0.1:5000/prod"), "choose one of --against and --previous"),
        (("--against", REG), "that is the configured registry itself"),
        (("--against", "127.0.0.1:5000/Prod"), "--against '127.0.0.1:5000/Prod'"),
    ],
)
def test_diff_refuses_bad_usage_with_exit_2(
    cli_stack: Stack, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    code, _, err = _diff(cli_stack, *args, capsys=capsys)
    assert code == 2
    assert message in err


def test_diff_previous_notes_what_it_could_not_compare(cli_stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    stack = cli_stack
    assert stack.build(push=True).ok
    stack.docker.grown = {APP1: 1, APP2: 1}
    assert stack.build(push=True).ok
    entry = journal.last(stack.config.parent)
    assert entry is not None
    one = next(t for t in entry.tags if t.ref == f"{REG}/app:1.0")
    two = next(t for t in entry.tags if t.ref == f"{REG}/app:2.0")
    del stack.registry.manifests[("127.0.0.1:5000/t/app", str(one.before))]  # garbage-collected since
    stack.registry.publish(f"{REG}/app:2.0", PLATFORMS, {"someone": "else"})  # moved by someone else since
    code, out, _ = _diff(stack, "--json", "--all", capsys=capsys)
    doc = json.loads(out)
    assert code == 0
    assert doc["notes"][0] == f"{REG}/app:1.0: what it pointed at before ({one.before}) is no longer in the registry"
    assert any(n.startswith(f"{REG}/app:2.0 moved since that release (to sha256:") for n in doc["notes"])
    refs = [t["ref"] for t in doc["tags"]]
    assert f"{REG}/app:1.0" not in refs and f"{REG}/app:2.0" in refs
    assert two.after != two.before
