"""multibake reproduce's comparison, without docker: layer tars, configs, an OCI layout, the report."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

from multibake.cli import inspect
from multibake.compare import layerdiff
from multibake.compare.reproduce import LayerDiff, OciTar, PlatformResult, Reproduced


def _layer(files: dict[str, tuple[bytes, int]]) -> bytes:
    """A gzip-compressed layer of regular files: path → (content, mtime)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for path, (content, mtime) in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode = len(content), mtime, 0o644
            tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), mtime=0)


def test_the_files_that_differ_are_named_with_what_differs() -> None:
    published = _layer({"app/version": (b"1", 100), "app/built": (b"12:00", 100), "gone": (b"x", 100)})
    rebuilt = _layer({"app/version": (b"1", 100), "app/built": (b"12:05", 100), "new": (b"y", 100)})
    got = {f.path: f for f in layerdiff.files(published, rebuilt)}
    assert set(got) == {"app/built", "gone", "new"}
    assert got["gone"].change == "removed" and got["new"].change == "added"
    fields = {name for name, _, _ in got["app/built"].fields}
    assert fields == {"content"}
    mtime = layerdiff.files(_layer({"a": (b"1", 100)}), _layer({"a": (b"1", 200)}))
    assert mtime[0].fields == (("mtime", "100", "200"),)


def test_config_fields() -> None:
    a = {"created": "2023-11-14T22:13:20Z", "config": {"Env": ["A=1"]}, "history": [{"created_by": "RUN x"}]}
    b = {"created": "2026-12-06T00:00:00Z", "config": {"Env": ["A=1"]}, "history": [{"created_by": "RUN y"}]}
    assert [f.field for f in layerdiff.config(a, b)] == ["created", "history[0]"]


def _blob(out: dict[str, bytes], doc: object) -> str:
    body = json.dumps(doc).encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    out["blobs/sha256/" + digest[7:]] = body
    return digest


def test_an_oci_layout_lists_its_platform_images(tmp_path: Path) -> None:
    files: dict[str, bytes] = {}
    config = _blob(files, {"os": "linux", "architecture": "arm", "variant": "v7"})
    image = _blob(files, {"config": {"digest": config}, "layers": []})
    attestation = _blob(files, {"layers": []})
    nested = _blob(
        files,
        {
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": image},
                {"digest": attestation, "platform": {"os": "unknown", "architecture": "unknown"}},
            ]
        },
    )
    files["index.json"] = json.dumps(
        {"manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": nested}]}
    ).encode()
    path = tmp_path / "out.tar"
    with tarfile.open(path, "w") as tar:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    assert OciTar(path).images() == {"linux/arm/v7": image}


def test_the_report_names_the_file_and_its_layer() -> None:
    changed = layerdiff.FileDiff(path="build-time", change="changed", fields=(("content", "aa", "bb"),))
    found = Reproduced(
        epoch=1700000000,
        builder="multibake-remote",
        seconds=12.0,
        platforms=(
            PlatformResult(target="bb", platform="linux/amd64", published="sha256:1", rebuilt="sha256:1"),
            PlatformResult(
                target="app",
                platform="linux/arm64",
                published="sha256:2",
                rebuilt="sha256:3",
                layers=(LayerDiff(index=2, published="sha256:a", rebuilt="sha256:b", files=(changed,)),),
            ),
        ),
    )
    text = inspect.reproduce_text(found)
    assert "bb linux/amd64: identical (sha256:1)" in text
    assert "  layer 2: sha256:a → sha256:b\n    changed build-time: content aa → bb" in text
    doc = inspect.reproduce_json(found)
    assert doc["identical"] is False
    assert doc["platforms"][1]["layers"][0]["files"] == [
        {"path": "build-time", "change": "changed", "fields": {"content": ["aa", "bb"]}}
    ]
