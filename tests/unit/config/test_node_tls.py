"""A ``tcp://`` node's mutual TLS files: checked at load time (exit 2 naming node and file), made absolute."""

from __future__ import annotations

from pathlib import Path

import pytest

from multibake.config.load import load
from multibake.config.nodes import TlsOption
from multibake.errors import ConfigError
from multibake.preflight.nodes import dry_run_lines, placement_lines
from tests import certs
from tests.helpers import make_context, write_config

SECRET_MARK = "MULTIBAKE-TEST-KEY"


def _pem(folder: Path) -> None:
    """ca.pem, client.pem and client-key.pem, as a team's CA would hand them out."""
    got = certs.issue("t")
    (folder / "ca.pem").write_bytes(got.cert)
    (folder / "client.pem").write_bytes(got.cert)
    (folder / "client-key.pem").write_bytes(got.key)


def _config(tmp_path: Path, node: str) -> Path:
    make_context(tmp_path, "app")
    return write_config(
        tmp_path,
        "registry: 127.0.0.1:5000/t\nplatforms: [linux/amd64]\nimages:\n  app: {context: app}\n"
        f"builder:\n  name: b\n  nodes:\n    - {node}\n",
    )


NODE = "{name: pi, driver: remote, endpoint: 'tcp://10.0.0.2:1234', platforms: [linux/arm64]"


def test_tls_files_are_made_absolute_and_go_to_buildx_as_driver_options(tmp_path: Path) -> None:
    _pem(tmp_path)
    cfg = _config(tmp_path, NODE + ", cacert: ca.pem, cert: client.pem, key: client-key.pem, servername: pi.lan}")
    builder = load(cfg).config.builder
    assert builder is not None
    node = builder.nodes[0]
    assert node.tls[TlsOption.CACERT] == str(tmp_path.resolve() / "ca.pem")
    (line,) = dry_run_lines(builder)
    assert placement_lines(builder) == ("linux/arm64: node pi (native)",)
    assert f"cacert={tmp_path.resolve() / 'ca.pem'}" in line and "servername=pi.lan" in line
    assert f"key={tmp_path.resolve() / 'client-key.pem'}" in line


def test_driver_opts_spelling_is_checked_too(tmp_path: Path) -> None:
    _pem(tmp_path)
    cfg = _config(tmp_path, NODE + ", driver_opts: {cacert: nowhere/ca.pem}}")
    with pytest.raises(ConfigError) as err:
        load(cfg)
    message = str(err.value)
    assert "node pi" in message and "nowhere/ca.pem" in message and "no such file" in message
    assert "driver_opts.cacert" in message and ":8:" in message


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (", cacert: missing.pem}", ("node pi", "cacert missing.pem", "no such file", "nodes[0].cacert")),
        (", cert: client.pem}", ("cert and key go together",)),
        (", cacert: client-key.pem}", ("node pi", "holds no PEM certificate")),
        (", cert: ca.pem, key: ca.pem}", ("node pi", "not a PEM certificate and its private key")),
        (", cacert: ca.pem, driver_opts: {cacert: ca.pem}}", ("cacert is given twice",)),
    ],
)
def test_bad_tls_files_are_refused_naming_the_node_and_the_file(
    tmp_path: Path, extra: str, words: tuple[str, ...]
) -> None:
    _pem(tmp_path)
    with pytest.raises(ConfigError) as err:
        load(_config(tmp_path, NODE + extra))
    message = str(err.value)
    for word in words:
        assert word in message, message
    key = (tmp_path / "client-key.pem").read_text()
    assert key.splitlines()[1] not in message  # never a line of the key


def test_tls_options_need_a_tcp_endpoint(tmp_path: Path) -> None:
    _pem(tmp_path)
    node = "{name: pi, driver: remote, endpoint: 'unix:///run/b.sock', platforms: [linux/arm64], cacert: ca.pem}"
    with pytest.raises(ConfigError) as err:
        load(_config(tmp_path, node))
    assert "tcp://" in str(err.value)


def test_native_platforms_default_to_the_first_and_its_32_bit_kin(tmp_path: Path) -> None:
    builder = load(_config(tmp_path, NODE.replace("[linux/arm64]", "[linux/arm64, linux/arm/v7]") + "}")).config.builder
    assert builder is not None
    assert builder.nodes[0].native_platforms == ("linux/arm64", "linux/arm/v7", "linux/arm/v6")
