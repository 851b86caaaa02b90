"""gc's graph logic on fakes: what a kept tag needs is never deleted, what goes with a deletion goes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from multibake.maintain.graph import Action, Node, Repo, Step, close, reach, steps, subject


def d(name: str) -> str:
    """A digest for a readable name."""
    return "sha256:" + name.encode().hex().ljust(64, "0")[:64]


def sig(of: str, kind: str = "sig") -> str:
    return f"sha256-{d(of).removeprefix('sha256:')}.{kind}"


def image(name: str, *layers: tuple[str, int]) -> Node:
    return Node(digest=d(name), blobs=((d(name + "-config"), 10), *((d(b), n) for b, n in layers)))


def index(name: str, *children: str) -> Node:
    return Node(digest=d(name), children=tuple(d(c) for c in children))


def repo(tags: dict[str, str], *nodes: Node) -> Repo:
    return Repo(
        name="127.0.0.1:5000/ns/app", tags={t: d(n) for t, n in tags.items()}, nodes={n.digest: n for n in nodes}
    )


RELEASE = (
    index("i1", "amd-1", "arm-1", "att-1"),
    image("amd-1", ("layer-a", 100)),
    image("arm-1", ("layer-b", 200)),
    image("att-1"),
    index("i2", "amd-2", "arm-1", "att-2"),  # the arm image did not change between the releases
    image("amd-2", ("layer-a", 100), ("layer-c", 50)),
    image("att-2"),
)


def by_action(found: list[Step], action: Action) -> set[str]:
    return {s.digest for s in found if s.action is action}


def test_a_staging_tag_on_a_public_tags_digest_is_removed_alone() -> None:
    r = repo({"multibake-staging-app": "i2", "2": "i2", "2-amd64": "amd-2"}, *RELEASE)
    found = steps(r, {"multibake-staging-app": "staging leftover"})
    assert found == [
        Step(
            action=Action.UNTAG,
            repository=r.name,
            digest=d("i2"),
            tags=("multibake-staging-app",),
            why="staging leftover",
        )
    ]


def test_a_killed_releases_staging_index_goes_with_the_images_only_it_references() -> None:
    r = repo({"multibake-staging-app": "i1", "2": "i2"}, *RELEASE)
    found = steps(r, {"multibake-staging-app": "staging leftover"})
    assert [s.digest for s in found] == [d("i1"), d("amd-1"), d("att-1")], "the index first, then its own images"
    assert all(s.action is Action.DELETE for s in found)
    assert found[0].tags == ("multibake-staging-app",)
    assert d("arm-1") not in by_action(found, Action.DELETE), "the kept index 2 references it"
    assert sum(s.freed for s in found) == 10 + 10, "configs only: layer-a is used by amd-2, layer-b by arm-1"


def test_per_platform_tags_and_signatures_go_with_their_index() -> None:
    r = repo(
        {
            "1": "i1",
            "1-amd64": "amd-1",
            "1-arm64": "arm-1",
            "2": "i2",
            "2-arm64": "arm-1",
            sig("i1"): "s1",
            sig("amd-1"): "s2",
            sig("i2"): "s3",
            sig("arm-1", "att"): "s4",
        },
        *RELEASE,
        image("s1"),
        image("s2"),
        image("s3"),
        image("s4"),
    )
    gone = close(r, {"1": "retention"})
    assert gone["1-amd64"] == "per-platform tag of 1"
    assert sig("i1") in gone and sig("amd-1") in gone
    assert "1-arm64" not in gone, "its image is also in the kept index 2: that tag is a policy's call"
    assert "2-arm64" not in gone and sig("i2") not in gone and sig("arm-1", "att") not in gone
    found = steps(r, {"1": "retention"})
    assert by_action(found, Action.DELETE) == {d("i1"), d("amd-1"), d("att-1"), d("s1"), d("s2")}
    assert by_action(found, Action.UNTAG) == set()


def test_a_policy_can_name_a_per_platform_tag_whose_image_a_kept_index_holds() -> None:
    r = repo({"1": "i1", "1-arm64": "arm-1", "2": "i2"}, *RELEASE)
    found = steps(r, {"1": "retention", "1-arm64": "retention"})
    assert by_action(found, Action.UNTAG) == {d("arm-1")}
    assert d("arm-1") not in by_action(found, Action.DELETE)


def test_two_doomed_tags_on_one_manifest_are_one_delete() -> None:
    r = repo({"multibake-staging-a": "i1", "old": "i1", "2": "i2"}, *RELEASE)
    found = steps(r, {"multibake-staging-a": "staging leftover", "old": "retention"})
    assert found[0].tags == ("multibake-staging-a", "old")
    assert by_action(found, Action.DELETE) == {d("i1"), d("amd-1"), d("att-1")}


def test_unknown_tags_are_ignored() -> None:
    r = repo({"2": "i2"}, *RELEASE)
    assert steps(r, {"nope": "retention"}) == []


def test_subject_of_artifact_tags() -> None:
    assert subject(sig("x")) == d("x")
    assert subject("sha256-" + "a" * 64) == "sha256:" + "a" * 64
    assert subject("sha256-abc.sig") is None
    assert subject("3.21") is None


@st.composite
def graphs(draw: st.DrawFn) -> tuple[Repo, dict[str, str]]:
    names = [f"m{i}" for i in range(draw(st.integers(2, 9)))]
    nodes = []
    for i, name in enumerate(names):  # children only among later manifests: no cycles, as in a registry
        later = names[i + 1 :]
        kids = draw(st.lists(st.sampled_from(later), max_size=3, unique=True)) if later else []
        nodes.append(index(name, *kids) if kids else image(name, (f"l{i % 3}", i)))
    tags = draw(st.dictionaries(st.sampled_from([f"t{i}" for i in range(8)]), st.sampled_from(names), min_size=1))
    signed = draw(st.lists(st.sampled_from(names), max_size=3, unique=True))
    tags.update({sig(n): n for n in signed})
    r = repo(tags, *nodes)
    doomed = draw(st.lists(st.sampled_from(sorted(r.tags)), max_size=len(r.tags), unique=True))
    return r, dict.fromkeys(doomed, "policy")


@settings(max_examples=300, deadline=None)
@given(graphs())
def test_no_delete_touches_what_a_kept_tag_reaches_and_every_doomed_tag_goes(case: tuple[Repo, dict[str, str]]) -> None:
    r, doomed = case
    found = steps(r, doomed)
    gone_tags = {t for s in found for t in s.tags}
    kept_tags = set(r.tags) - gone_tags
    assert set(doomed) <= gone_tags
    needed = reach(r, (r.tags[t] for t in kept_tags))
    assert not by_action(found, Action.DELETE) & needed, "a kept tag reaches a deleted manifest"
    for s in found:  # a delete takes every tag on its digest: all of them must be doomed
        if s.action is Action.DELETE:
            assert set(s.tags) == {t for t, dg in r.tags.items() if dg == s.digest}
    order = [s.digest for s in found if s.action is Action.DELETE]
    for pos, digest in enumerate(order):
        assert not any(digest in r.nodes[p].children for p in order[pos + 1 :] if p in r.nodes), "parents first"
