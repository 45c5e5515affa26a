"""Payload encryption for everything PatchPilot puts into Temporal (AES-256-GCM, rotating keys).

Keys come from `PATCHPILOT_CODEC_KEYS` ("id:base64key,id:base64key", the first encrypts, all
decrypt) or `PATCHPILOT_CODEC_KEY_FILE` (one "id:base64key" per line, first line encrypts). Each
payload carries its key id in its metadata, so old histories stay readable after a rotation.
Failure messages and stack traces are encoded too.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12


class CodecConfigError(ValueError):
    """The key configuration cannot be used; the message says which entry and why."""


def parse_keys(text: str, *, source: str) -> tuple[str, dict[str, bytes]]:
    """Parse "id:base64key" entries (comma or newline separated); the first one is current."""
    keys: dict[str, bytes] = {}
    current = ""
    entries = [entry.strip() for entry in text.replace("\n", ",").split(",") if entry.strip()]
    for position, entry in enumerate(entries, start=1):
        key_id, separator, encoded = entry.partition(":")
        if not separator or not key_id or not key_id.replace("-", "").replace("_", "").isalnum():
            raise CodecConfigError(f"{source} entry {position}: expected 'key-id:base64-key'")
        try:
            key = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise CodecConfigError(f"{source} key {key_id!r}: not valid base64") from None
        if len(key) != 32:
            raise CodecConfigError(
                f"{source} key {key_id!r}: {len(key)} bytes; AES-256 needs 32 "
                "(make one with: head -c 32 /dev/urandom | base64)"
            )
        if key_id in keys:
            raise CodecConfigError(f"{source} key {key_id!r} is listed twice")
        keys[key_id] = key
        current = current or key_id
    if not keys:
        raise CodecConfigError(f"{source} holds no key")
    return current, keys


class EncryptionCodec(PayloadCodec):
    def __init__(self, current_key_id: str, keys: dict[str, bytes]) -> None:
        if current_key_id not in keys:
            raise CodecConfigError(f"current key {current_key_id!r} is not among the keys")
        self._current = current_key_id
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}

    @property
    def current_key_id(self) -> str:
        return self._current

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        cipher = self._ciphers[self._current]
        encoded = []
        for payload in payloads:
            nonce = os.urandom(NONCE_BYTES)
            # The key id is bound into the ciphertext as associated data.
            sealed = cipher.encrypt(nonce, payload.SerializeToString(), self._current.encode())
            encoded.append(
                Payload(
                    metadata={"encoding": ENCODING, KEY_ID: self._current.encode()},
                    data=nonce + sealed,
                )
            )
        return encoded

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        decoded = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCODING:
                decoded.append(payload)
                continue
            key_id = payload.metadata.get(KEY_ID, b"").decode()
            cipher = self._ciphers.get(key_id)
            if cipher is None:
                raise CodecConfigError(
                    f"payload encrypted with key {key_id!r}, which this process does not have"
                )
            nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
            decoded.append(Payload.FromString(cipher.decrypt(nonce, sealed, key_id.encode())))
        return decoded


def codec_from_environment(environ: dict[str, str] | None = None) -> EncryptionCodec | None:
    env = os.environ if environ is None else environ
    if env.get("PATCHPILOT_CODEC_KEYS"):
        current, keys = parse_keys(env["PATCHPILOT_CODEC_KEYS"], source="PATCHPILOT_CODEC_KEYS")
        return EncryptionCodec(current, keys)
    key_file = env.get("PATCHPILOT_CODEC_KEY_FILE")
    if key_file:
        try:
            text = Path(key_file).read_text(encoding="utf-8")
        except OSError as error:
            raise CodecConfigError(
                f"PATCHPILOT_CODEC_KEY_FILE {key_file}: {error.strerror or error}"
            ) from None
        current, keys = parse_keys(text, source=f"PATCHPILOT_CODEC_KEY_FILE {key_file}")
        return EncryptionCodec(current, keys)
    return None


def data_converter(codec: PayloadCodec | None) -> DataConverter:
    """Pydantic JSON payloads; encrypted, failures included, when a codec is configured."""
    if codec is None:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
