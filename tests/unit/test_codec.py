import base64
import os

import pytest
from temporalio.api.common.v1 import Payload

from bot.codec import CodecConfigError, EncryptionCodec, parse_keys


def key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


async def test_round_trip_hides_the_plaintext_and_names_the_key() -> None:
    current, keys = parse_keys(f"k1:{key()}", source="test")
    codec = EncryptionCodec(current, keys)
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'{"vaultToken":"hvs.secret"}')
    [sealed] = await codec.encode([plain])
    assert b"hvs.secret" not in sealed.SerializeToString()
    assert sealed.metadata["encryption-key-id"] == b"k1"
    assert await codec.decode([sealed]) == [plain]


async def test_rotation_decrypts_old_payloads_and_encrypts_with_the_new_key() -> None:
    old = key()
    _, old_keys = parse_keys(f"k1:{old}", source="test")
    [sealed_with_old] = await EncryptionCodec("k1", old_keys).encode([Payload(data=b"x")])
    current, keys = parse_keys(f"k2:{key()},k1:{old}", source="test")
    rotated = EncryptionCodec(current, keys)
    assert await rotated.decode([sealed_with_old]) == [Payload(data=b"x")]
    [sealed_with_new] = await rotated.encode([Payload(data=b"x")])
    assert sealed_with_new.metadata["encryption-key-id"] == b"k2"


async def test_a_payload_from_an_unknown_key_is_a_clear_error() -> None:
    _, keys_a = parse_keys(f"a:{key()}", source="test")
    _, keys_b = parse_keys(f"b:{key()}", source="test")
    [sealed] = await EncryptionCodec("a", keys_a).encode([Payload(data=b"x")])
    with pytest.raises(CodecConfigError, match="key 'a', which this process does not have"):
        await EncryptionCodec("b", keys_b).decode([sealed])


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "holds no key"),
        ("nokey", "expected 'key-id:base64-key'"),
        ("k1:not base64!", "not valid base64"),
        (f"k1:{base64.b64encode(b'short').decode()}", "5 bytes; AES-256 needs 32"),
        (
            f"k1:{base64.b64encode(bytes(32)).decode()},k1:{base64.b64encode(bytes(32)).decode()}",
            "listed twice",
        ),
    ],
)
def test_bad_key_configuration_says_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(CodecConfigError, match=reason):
        parse_keys(text, source="PATCHPILOT_CODEC_KEYS")
