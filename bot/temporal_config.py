"""Where and how every PatchPilot process reaches Temporal: the SDK's environment configuration.

`temporalio.envconfig` reads what the `temporal` CLI reads: a profile (`TEMPORAL_PROFILE`, default
"default") of `temporal.toml` (`TEMPORAL_CONFIG_FILE`, default
`~/.config/temporalio/temporal.toml`), then the `TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`,
`TEMPORAL_API_KEY`, `TEMPORAL_TLS`, `TEMPORAL_TLS_CLIENT_CERT_PATH`, `TEMPORAL_TLS_CLIENT_KEY_PATH`,
`TEMPORAL_TLS_SERVER_CA_CERT_PATH`, `TEMPORAL_TLS_SERVER_NAME` and `TEMPORAL_GRPC_META_*`
variables over it (docs.temporal.io, "Environment configuration"). PatchPilot's own
`temporal_address` / `temporal_namespace` settings (patchpilot.toml, or given in code) win over
the profile when set. An API key turns TLS on, as the SDK does.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.envconfig import ClientConfigProfile, ClientConnectConfig
from temporalio.service import TLSConfig

from bot.settings import Settings


class TemporalConfigError(ValueError):
    """The Temporal client configuration cannot be used; the message says which part and why."""


@dataclass(frozen=True)
class TemporalTarget:
    """What a client connects with: the profile's settings after PatchPilot's own overrides.

    `options` are `Client.connect` keyword arguments (secrets included: never log them);
    `describe()` is safe to print.
    """

    profile: str
    address: str
    namespace: str
    options: ClientConnectConfig
    api_key: bool
    client_cert: bool
    server_name: str | None

    @property
    def tls(self) -> bool:
        """True when the connection is TLS (an API key alone turns it on)."""
        return self.options.get("tls", False) is not False

    def describe(self) -> str:
        """One line without secrets, e.g. "profile prod: temporal.example:7233, namespace
        payments, TLS with a client certificate, auth: API key"."""
        tls = "off"
        if self.tls:
            tls = "on" + (" with a client certificate" if self.client_cert else "")
        auth = "API key" if self.api_key else ("mTLS" if self.client_cert else "none")
        return (
            f"profile {self.profile}: {self.address}, namespace {self.namespace}, TLS {tls}, "
            f"auth {auth}"
        )


def profile_name() -> str:
    """The envconfig profile in use: `TEMPORAL_PROFILE`, else "default"."""
    return os.environ.get("TEMPORAL_PROFILE") or "default"


def _load_profile() -> ClientConfigProfile:
    try:
        return ClientConfigProfile.load(profile=os.environ.get("TEMPORAL_PROFILE") or None)
    except Exception as error:  # the SDK's loader raises RuntimeError/ValueError with the reason
        raise TemporalConfigError(
            f"Temporal client configuration (profile {profile_name()}, TEMPORAL_CONFIG_FILE "
            f"{os.environ.get('TEMPORAL_CONFIG_FILE') or 'default location'}): {error}"
        ) from None


def profile_address() -> str | None:
    """The address the profile (file or TEMPORAL_ADDRESS) names, or None."""
    return _load_profile().address


def namespace_for(settings: Settings) -> str:
    """The namespace a client made from `settings` uses: PatchPilot's `temporal_namespace` when
    set (patchpilot.toml, TEMPORAL_NAMESPACE, or in code), else the profile's (temporal.toml),
    else "default". Reads no certificate; raises TemporalConfigError as `temporal_target`."""
    if "temporal_namespace" in settings.model_fields_set:
        return settings.temporal_namespace
    return _load_profile().namespace or settings.temporal_namespace


def temporal_target(settings: Settings) -> TemporalTarget:
    """The client configuration for `settings` (see the module doc for the sources).

    Raises TemporalConfigError naming the profile and what cannot be read (a missing certificate
    file, a malformed temporal.toml).
    """
    profile = _load_profile()
    try:
        options = profile.to_client_connect_config()  # reads the certificate files
    except OSError as error:
        raise TemporalConfigError(
            f"Temporal client configuration (profile {profile_name()}): cannot read "
            f"{error.filename or 'a TLS file'}: {error.strerror or error}"
        ) from None
    explicit = settings.model_fields_set
    address = settings.temporal_address
    if "temporal_address" not in explicit and profile.address:
        address = profile.address
    namespace = settings.temporal_namespace
    if "temporal_namespace" not in explicit and profile.namespace:
        namespace = profile.namespace  # as namespace_for, without loading the profile twice
    options["target_host"] = address
    options["namespace"] = namespace
    tls = profile.tls
    return TemporalTarget(
        profile=profile_name(),
        address=address,
        namespace=namespace,
        options=options,
        api_key=bool(profile.api_key),
        client_cert=bool(tls and tls.client_cert),
        server_name=tls.server_name if tls else None,
    )


async def connect_client(
    settings: Settings, data_converter: DataConverter | None = None, **extra: Any
) -> Client:
    """`Client.connect` with the target of `settings` (and `data_converter`, `extra` kwargs)."""
    options: dict[str, Any] = dict(temporal_target(settings).options)
    if data_converter is not None:
        options["data_converter"] = data_converter
    return await Client.connect(**options, **extra)


def verify_server_certificate(target: TemporalTarget, timeout: float) -> str:
    """Open a TLS connection to the target and verify its certificate as the SDK would: against
    the configured server CA (else the system's roots), for `server_name` (else the host).

    Returns what was verified (subject, expiry). Raises ssl.SSLError/OSError saying why not.
    """
    tls = target.options.get("tls")
    config = tls if isinstance(tls, TLSConfig) else TLSConfig()
    host, _, port = target.address.rpartition(":")
    host = host.strip("[]")
    context = ssl.create_default_context()
    if config.server_root_ca_cert:
        context = ssl.create_default_context(cadata=config.server_root_ca_cert.decode())
    if config.client_cert and config.client_private_key:
        _load_client_pair(context, config.client_cert, config.client_private_key)
    context.set_alpn_protocols(["h2"])
    name = config.domain or host
    with (
        socket.create_connection((host, int(port)), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=name) as wrapped,
    ):
        cert = wrapped.getpeercert() or {}
    subject = ", ".join("=".join(part) for rdn in cert.get("subject", ()) for part in rdn)
    until = cert.get("notAfter", "?")
    return f"certificate of {name} verifies ({subject or 'no subject'}, valid until {until})"


def _load_client_pair(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    # ssl loads a client certificate only from files: write them where only we can read.
    with tempfile.TemporaryDirectory() as folder:
        cert_path, key_path = Path(folder) / "cert.pem", Path(folder) / "key.pem"
        cert_path.write_bytes(cert)
        key_path.touch(mode=0o600)
        key_path.write_bytes(key)
        context.load_cert_chain(cert_path, key_path)


async def check_certificate(target: TemporalTarget, timeout: float) -> str:
    """`verify_server_certificate` off the event loop."""
    return await asyncio.to_thread(verify_server_certificate, target, timeout)
