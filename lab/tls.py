"""A TLS front for a plain Temporal dev server, as a production Temporal sits behind one.

`make_pki` writes a throwaway CA, a server certificate for localhost/127.0.0.1 and a client
certificate (PEM files). `TlsProxy` terminates TLS (HTTP/2 by ALPN, as gRPC needs), optionally
requires a client certificate signed by that CA, forwards the bytes to the dev server, and keeps
what clients sent so a test can read the gRPC request headers (`request_headers`).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_HEADERS, _CONTINUATION = 0x1, 0x9
_END_HEADERS, _PADDED, _PRIORITY = 0x4, 0x8, 0x20


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files `make_pki` wrote."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.touch(mode=0o600)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer_key: ec.EllipticCurvePrivateKey,
    issuer: str,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(folder: Path, ca_name: str = "PatchPilot lab CA") -> Pki:
    """A CA, a server certificate (localhost, 127.0.0.1) and a client certificate in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue(ca_name, ca_key, ca_key, ca_name, ca=True)
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    paths = {}
    for role in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(f"lab {role}", key, ca_key, ca_name, server=role == "server")
        (folder / f"{role}.pem").write_bytes(cert.public_bytes(pem))
        paths[role] = (folder / f"{role}.pem", _write_key(folder / f"{role}-key.pem", key))
    return Pki(folder / "ca.pem", *paths["server"], *paths["client"])


class TlsProxy:
    """TLS on 127.0.0.1:`port` (0: any free port) in front of the plain `upstream` host:port.

    With `require_client_cert`, a client without a certificate signed by the CA is refused in
    the handshake. `received` holds what clients sent, decrypted, one bytes object per
    connection. Use as `async with TlsProxy(...) as proxy:`; `proxy.address` is host:port.
    """

    def __init__(self, pki: Pki, upstream: str, *, require_client_cert: bool) -> None:
        self._pki = pki
        self._upstream = upstream.rsplit(":", 1)
        self._require = require_client_cert
        self._server: asyncio.Server | None = None
        self.received: list[bytearray] = []
        self.address = ""

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self._pki.server_cert, self._pki.server_key)
        context.set_alpn_protocols(["h2"])
        if self._require:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self._pki.ca_cert)
        return context

    async def __aenter__(self) -> TlsProxy:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", 0, ssl=self._context(), ssl_handshake_timeout=10
        )
        port = self._server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = self._upstream
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            return
        seen = bytearray()
        self.received.append(seen)
        await asyncio.gather(
            _pipe(reader, up_writer, seen), _pipe(up_reader, writer, None), return_exceptions=True
        )


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, keep: bytearray | None
) -> None:
    try:
        while chunk := await reader.read(65536):
            if keep is not None and len(keep) < 4_000_000:
                keep.extend(chunk)
            writer.write(chunk)
            await writer.drain()
    finally:
        writer.close()


def request_headers(stream: bytes) -> list[dict[str, str]]:
    """The header blocks a client sent on one HTTP/2 connection, decoded (HPACK, RFC 7541)."""
    from hpack import Decoder

    if not stream.startswith(PREFACE):
        return []
    decoder, blocks, pending = Decoder(), [], b""
    at = len(PREFACE)
    while at + 9 <= len(stream):
        length = int.from_bytes(stream[at : at + 3], "big")
        kind, flags = stream[at + 3], stream[at + 4]
        payload = stream[at + 9 : at + 9 + length]
        at += 9 + length
        if kind == _HEADERS:
            pad = payload[0] if flags & _PADDED else 0
            start = (1 if flags & _PADDED else 0) + (5 if flags & _PRIORITY else 0)
            pending = payload[start : len(payload) - pad]
        elif kind == _CONTINUATION:
            pending += payload
        else:
            continue
        if flags & _END_HEADERS:
            blocks.append({str(k): str(v) for k, v in decoder.decode(pending, raw=False)})
            pending = b""
    return blocks


__all__ = ["Pki", "TlsProxy", "make_pki", "request_headers"]
