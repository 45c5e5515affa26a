"""Payload encryption: the keys parse, and a payload survives encryption and decryption."""

from __future__ import annotations

from bot.cli.checks import CheckResult, fail, ok, short, skip
from bot.settings import Settings

CHECK = "Payload codec"


async def check_codec(settings: Settings) -> CheckResult:
    """The payload encryption keys parse, and a payload survives encode + decode."""
    from temporalio.api.common.v1 import Payload

    make_codec = getattr(settings, "payload_codec", None)
    if make_codec is None:
        return skip(CHECK, "this build has no payload encryption")
    try:
        codec = make_codec()
    except ValueError as error:  # bot.codec.CodecConfigError
        return fail(
            CHECK,
            short(error, 300),
            "Set PATCHPILOT_CODEC_KEYS (or a PATCHPILOT_CODEC_KEY_FILE) to 'key-id:base64-key' "
            "entries, the current key first; every worker and client needs the same keys",
        )
    if codec is None:
        return skip(
            CHECK,
            "payload encryption off: workflow inputs and results are stored as plain JSON "
            "(they never hold secrets)",
            "Optional: PATCHPILOT_CODEC_KEYS to encrypt them",
        )
    probe = Payload(metadata={"encoding": b"json/plain"}, data=b'{"probe": true}')
    try:
        decoded = await codec.decode(await codec.encode([probe]))
    except Exception as error:
        return fail(
            CHECK,
            f"a payload does not survive encryption and decryption: {short(error)}",
            "Check the keys in PATCHPILOT_CODEC_KEYS / PATCHPILOT_CODEC_KEY_FILE",
        )
    if list(decoded) != [probe]:
        return fail(CHECK, "decrypting an encrypted payload gave something else")
    current = getattr(codec, "current_key_id", "?")
    return ok(CHECK, f"payloads encrypted (AES-GCM) with key {current!r}")
