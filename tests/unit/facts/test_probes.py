"""Health probes from the controller: an https probe of a service whose certificate the fleet's
own CA signed (Vault or Consul with TLS) passes when the inventory names that CA — as it does
for swarm's own Vault and Consul clients — and is refused by the system's CAs alone."""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from orchestrator.addresses import http_url
from orchestrator.config.inventory import load_inventory
from orchestrator.facts.probes import Outcome, ProbeNetwork, http_probe
from orchestrator.render.services import Probe


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _cert(subject: str, issuer: str, key: ec.EllipticCurvePrivateKey, signer: ec.EllipticCurvePrivateKey,
          ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    return builder.sign(signer, hashes.SHA256())


@pytest.fixture
def fleet_ca(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A CA of the fleet's own, and a server certificate for localhost it signed."""
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _cert("fleet CA", "fleet CA", ca_key, ca_key, ca=True)
    server = _cert("localhost", "fleet CA", server_key, ca_key, ca=False)
    paths = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return paths


class Healthy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def https_service(fleet_ca: tuple[Path, Path, Path]) -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Healthy)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(fleet_ca[1]), str(fleet_ca[2]))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()


def probe(network: ProbeNetwork, port: int) -> Outcome:
    async def go() -> Outcome:
        async with network.client() as client:
            return await http_probe(client, "localhost", Probe(kind="http", scheme="https", port=port, path="/"), {})

    return asyncio.run(go())


def test_an_https_probe_trusts_the_ca_the_inventory_names(project_copy: Path, edit_yaml: Callable[..., None],
                                                          fleet_ca: tuple[Path, Path, Path], https_service: int) -> None:
    inventory_path = project_copy / "inventory/swarm.yml"
    edit_yaml(inventory_path, lambda inv: inv["vault"].update(ca_cert=str(fleet_ca[0])))
    network = ProbeNetwork.for_inventory(load_inventory(inventory_path))
    assert network.ca_files == (fleet_ca[0],)
    assert probe(network, https_service).ok
    refused = probe(ProbeNetwork(), https_service)  # the system's CAs alone: not this fleet's
    assert not refused.ok


class _Ipv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def test_an_http_probe_reaches_a_service_at_an_ipv6_address() -> None:
    server = _Ipv6Server(("::1", 0), Healthy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    health = Probe(kind="http", port=int(server.server_address[1]), path="/health")

    async def go() -> Outcome:
        async with ProbeNetwork().client() as client:
            return await http_probe(client, "::1", health, {})

    try:
        outcome = asyncio.run(go())
    finally:
        server.shutdown()
    assert outcome.ok, outcome.detail


def test_a_probe_url_brackets_an_ipv6_address() -> None:
    assert http_url("fd00::5", 8000, "/health") == "http://[fd00::5]:8000/health"
    assert http_url("198.18.0.5", 8000, "/health") == "http://198.18.0.5:8000/health"
    assert http_url("fd00::5", 8200, scheme="https") == "https://[fd00::5]:8200"
