"""Native-first placement, a builder without lost nodes, a lost node named, and the TLS probe's reasons."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from multibake.bake.run import BuildReport, CellResult
from multibake.config.nodes import BuilderSpec, NodeSpec, placement, routed, without
from multibake.errors import UsageError
from multibake.kinds import Mode, NodeLoss, Status
from multibake.preflight import nodes, tls
from multibake.preflight.builder import BuilderInfo
from multibake.release import nodeloss
from tests import certs

X86: dict[str, Any] = {
    "name": "x86",
    "driver": "remote",
    "endpoint": "tcp://10.0.0.1:1234",
    "platforms": ["linux/amd64"],
}
PI: dict[str, Any] = {
    "name": "pi",
    "driver": "remote",
    "endpoint": "tcp://10.0.0.2:1234",
    "platforms": ["linux/arm64", "arm/v7"],
}


def builder(*nodes_: dict[str, Any], loss: NodeLoss = NodeLoss.FAIL) -> BuilderSpec:
    return BuilderSpec.model_validate({"name": "b", "nodes": list(nodes_), "on_node_loss": loss})


def test_a_native_node_builds_a_platform_an_earlier_node_would_emulate() -> None:
    emulating = {**X86, "platforms": ["linux/amd64", "linux/arm64"]}
    spec = builder(emulating, PI)
    chosen = {p: (n.name, emu) for p, (n, emu) in placement(spec).items()}
    assert chosen == {
        "linux/amd64": ("x86", False),
        "linux/arm64": ("pi", False),
        "linux/arm/v7": ("pi", False),
    }
    # buildx sends a platform to the first node declaring it: the builder declares it on the chosen node only
    assert [n.platforms for n in routed(spec).nodes] == [["linux/amd64"], ["linux/arm64", "linux/arm/v7"]]


def test_without_a_node_its_platforms_go_to_the_first_remaining_node_emulated() -> None:
    kept = without(builder(X86, PI), {"pi"})
    assert kept.name == "b-without-pi"
    assert [n.name for n in kept.nodes] == ["x86"]
    chosen = {p: (n.name, emu) for p, (n, emu) in placement(kept).items()}
    assert chosen == {"linux/amd64": ("x86", False), "linux/arm64": ("x86", True), "linux/arm/v7": ("x86", True)}
    with pytest.raises(ValueError, match="no node"):
        without(builder(X86), {"x86"})


class Probes:
    """nodes.Buildx, only its probe: node name → what the connection finds."""

    def __init__(self, **found: tls.Probe) -> None:
        self.found = found

    def probe(self, node: NodeSpec, timeout: float) -> tls.Probe | None:
        return self.found.get(node.name, tls.Probe(verdict=tls.Verdict.ANSWERS))


DOWN = tls.Probe(verdict=tls.Verdict.UNREACHABLE, reason="connection refused")
REFUSED = tls.Probe(verdict=tls.Verdict.REFUSED, reason="the node refused the client certificate c.pem")


def test_a_node_down_at_preflight_is_exit_2_or_emulated_as_configured() -> None:
    with pytest.raises(UsageError, match=r"node pi \(tcp://10.0.0.2:1234\): not reachable: connection refused"):
        nodes.refuse_unanswered(Probes(pi=DOWN), builder(X86, PI))  # type: ignore[arg-type]
    assert nodes.refuse_unanswered(Probes(pi=DOWN), builder(X86, PI, loss=NodeLoss.EMULATE)) == {  # type: ignore[arg-type]
        "pi": "connection refused"
    }
    # a refused certificate is a configuration error: never emulated away
    with pytest.raises(UsageError, match=r"TLS refused: the node refused the client certificate c\.pem"):
        nodes.refuse_unanswered(Probes(pi=REFUSED), builder(X86, PI, loss=NodeLoss.EMULATE))  # type: ignore[arg-type]
    said: list[str] = []
    kept = nodes.emulating(builder(X86, PI), {"pi": "connection refused"}, said.append)
    assert kept.name == "b-without-pi"
    assert said == [
        "multibake: node pi (tcp://10.0.0.2:1234) does not answer (connection refused): linux/arm64, linux/arm/v7 "
        "built on node x86 under emulation (on_node_loss: emulate; builder b-without-pi)"
    ]


def _report(*cells: CellResult) -> BuildReport:
    info = BuilderInfo(buildx_version="0.29", name="b", driver="remote", platforms=(), multi_platform=True, nodes=2)
    return BuildReport(builder=info, mode=Mode.PUSH, cells=cells)


def test_a_lost_node_is_named_with_its_endpoint_on_its_failed_cells_only() -> None:
    app = CellResult(
        target="app", family="app", platforms=("linux/amd64", "linux/arm64"), tags=(), status=Status.FAILED, error="EOF"
    )
    solo = CellResult(
        target="solo", family="solo", platforms=("linux/amd64",), tags=(), status=Status.FAILED, error="x"
    )
    fine = CellResult(target="ok", family="ok", platforms=("linux/amd64",), tags=(), status=Status.BUILT)
    said: list[str] = []
    report, lost = nodeloss.blame(_report(app, solo, fine), builder(X86, PI), Probes(pi=DOWN), said.append)  # type: ignore[arg-type]
    assert lost == {"pi": "connection refused"}
    assert said == [
        "multibake: error: node pi (tcp://10.0.0.2:1234) stopped answering during the build: connection refused"
    ]
    by = {c.target: c for c in report.cells}
    assert by["app"].error == "node pi (tcp://10.0.0.2:1234) stopped answering: connection refused"
    assert by["app"].log_tail[-1] == "EOF"  # BuildKit's own last line is kept below it
    assert by["solo"].error == "x" and by["ok"].error is None
    again = _report(CellResult(target="app", family="app", platforms=app.platforms, tags=(), status=Status.BUILT))
    assert [c.status for c in nodeloss.merged(report, again).cells] == [Status.BUILT, Status.FAILED, Status.BUILT]


def test_nothing_is_blamed_when_every_node_answers() -> None:
    failed = CellResult(target="a", family="a", platforms=("linux/arm64",), tags=(), status=Status.FAILED, error="e")
    report, lost = nodeloss.blame(_report(failed), builder(X86, PI), Probes(), print)  # type: ignore[arg-type]
    assert lost == {} and report.cells[0].error == "e"


# --- the probe against a TLS server of the test's own, on 127.0.0.1 ----------------------------------


def _pki(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}

    def issue(label: str, signer: tuple[Any, Any] | None, san: str | None, days: int = 1) -> tuple[Any, Any]:
        got = certs.issue(label, signer, san, days)
        for suffix, pem in (("crt", got.cert), ("key", got.key)):
            out[f"{label}.{suffix}"] = folder / f"{label}.{suffix}"
            out[f"{label}.{suffix}"].write_bytes(pem)
        return got.signer

    ca = issue("ca", None, None)
    issue("other-ca", None, None)
    issue("server", ca, "node.test")
    issue("client", ca, None)
    issue("expired", ca, None, days=-1)
    return out


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[int, dict[str, Path]]]:
    """A TLS server asking for a client certificate signed by the CA, answering with a few bytes."""
    pki = _pki(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki["server.crt"], pki["server.key"])
    context.load_verify_locations(pki["ca.crt"])
    context.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            try:
                with context.wrap_socket(conn, server_side=True) as tls_conn:
                    tls_conn.recv(64)
                    tls_conn.sendall(b"\x00" * 9)
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], pki
    stop.set()
    thread.join(2)
    listener.close()


def _node(port: int, pki: dict[str, Path], **files: str) -> NodeSpec:
    opts = {"cacert": str(pki["ca.crt"]), "cert": str(pki["client.crt"]), "key": str(pki["client.key"])}
    opts |= {"servername": "node.test", **files}
    return NodeSpec.model_validate({**X86, "endpoint": f"tcp://127.0.0.1:{port}", **opts})


def test_the_probe_says_why_a_certificate_was_refused(server: tuple[int, dict[str, Path]]) -> None:
    port, pki = server
    assert tls.probe(_node(port, pki)) == tls.Probe(verdict=tls.Verdict.ANSWERS)
    wrong_ca = tls.probe(_node(port, pki, cacert=str(pki["other-ca.crt"])))
    assert wrong_ca is not None and wrong_ca.verdict is tls.Verdict.REFUSED
    assert "not signed by cacert" in wrong_ca.reason and "other-ca.crt" in wrong_ca.reason
    name = tls.probe(_node(port, pki, servername="elsewhere.test"))
    assert name is not None and "not for elsewhere.test" in name.reason
    for cert in ("other-ca", "expired"):
        refused = tls.probe(_node(port, pki, cert=str(pki[f"{cert}.crt"]), key=str(pki[f"{cert}.key"])), timeout=3)
        assert refused is not None and refused.verdict is tls.Verdict.REFUSED, cert
        assert f"refused the client certificate {pki[f'{cert}.crt']}" in refused.reason
    down = tls.probe(_node(1, pki))
    assert down == tls.Probe(verdict=tls.Verdict.UNREACHABLE, reason="connection refused")
    assert tls.probe(NodeSpec.model_validate({**X86, "endpoint": "unix:///run/b.sock"})) is None
