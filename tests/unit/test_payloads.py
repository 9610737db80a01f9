"""The payload codec on its own: sealed payloads round-trip, tampering never yields garbage, keys rotate, and a
user's value is never mistaken for an envelope."""

from __future__ import annotations

import base64
import hmac
import json
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from protection_app import Reverse

from bdurable import EncryptionKeyMissingError, PayloadIntegrityError, Settings
from bdurable.codec import dumps, encode_payload
from bdurable.errors import PayloadTooLargeError
from bdurable.keyring import Keyring
from bdurable.payloads import ENCRYPTED, MARKER, UNAVAILABLE, UNREADABLE, CodecUnavailableError, PayloadCodec
from bdurable.wire import ErrorRecord


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def codec(*keys: str, compress_above: int | None = 4096) -> PayloadCodec:
    return PayloadCodec(keyring=Keyring.from_texts(keys), compress_above=compress_above)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_every_json_value_comes_back_the_same_through_every_configuration(value: Any) -> None:
    text = dumps(value)
    for payloads in (
        PayloadCodec(),
        PayloadCodec(compress_above=8),
        codec(new_key()),
        codec(new_key(), compress_above=8),
    ):
        stored = payloads.seal(text)
        assert json.loads(stored) is not None or value is None or stored == text  # stored is JSON text itself
        assert payloads.open(stored) == value


def test_an_encrypted_payload_is_one_json_string_that_hides_the_value() -> None:
    payloads = codec(new_key())
    stored = payloads.seal(dumps({"card": "4111-1111-1111-1111"}))
    assert stored.startswith(MARKER)
    assert isinstance(json.loads(stored), str)
    assert "4111" not in stored
    assert payloads.open(stored) == {"card": "4111-1111-1111-1111"}


def test_only_large_payloads_are_compressed_without_keys() -> None:
    payloads = PayloadCodec(compress_above=100)
    small = dumps({"a": 1})
    assert payloads.seal(small) == small  # unchanged: plain JSON, no cost
    large = dumps({"text": "abc" * 1000})
    stored = payloads.seal(large)
    assert stored.startswith('"$bdurable:1:z::')
    assert len(stored) < len(large) / 5
    assert payloads.open(stored) == {"text": "abc" * 1000}
    assert PayloadCodec(compress_above=None).seal(large) == large  # "off"
    # What zstd cannot shrink enough to pay for the envelope's base64 is stored as it is, not a third larger.
    incompressible = dumps(base64.b64encode(os.urandom(3000)).decode())
    counted = PayloadCodec(compress_above=100)
    assert counted.seal(incompressible) == incompressible
    assert counted.stored_bytes == counted.plain_bytes == len(incompressible)  # the metrics say so too


def test_a_user_value_that_looks_like_an_envelope_is_kept_as_the_user_sent_it() -> None:
    forged = "$bdurable:1:z::KLUv_SAEIQAAAA=="
    for payloads in (PayloadCodec(), codec(new_key())):
        for value in (forged, {"nested": [forged]}, {forged: 1}):
            assert payloads.open(payloads.seal(dumps(value))) == value


def test_every_tampered_byte_is_caught_never_returned_as_garbage() -> None:
    payloads = codec(new_key())
    stored = payloads.seal(dumps({"amount": 100}))
    # every character after the marker (the marker is what makes it an envelope: without it, it is a string)
    for position in range(len(MARKER), len(stored) - 1):
        original = stored[position]
        for replacement in {"A", "B", ":", "1"} - {original}:
            tampered = stored[:position] + replacement + stored[position + 1 :]
            try:
                value = payloads.open(tampered)
            except (PayloadIntegrityError, EncryptionKeyMissingError):
                continue
            # base64 may ignore padding or map two spellings to one byte string: then it is the same payload
            assert value == {"amount": 100}, f"garbage from a change at {position}: {value!r}"


def test_a_compressed_payload_that_was_corrupted_is_an_integrity_error() -> None:
    payloads = PayloadCodec(compress_above=10)
    stored = payloads.seal(dumps("x" * 500))
    header, data = stored[1:-1].rsplit(":", 1)
    raw = bytearray(base64.urlsafe_b64decode(data))
    raw[len(raw) // 2] ^= 0xFF
    with pytest.raises(PayloadIntegrityError, match="compressed data is corrupt"):
        payloads.open(f'"{header}:{base64.urlsafe_b64encode(bytes(raw)).decode()}"')


def test_rotation_the_first_key_encrypts_and_every_key_decrypts() -> None:
    old, new = new_key(), new_key()
    before = codec(old).seal(dumps("written before the rotation"))
    during = codec(new, old)
    after = during.seal(dumps("written after"))
    old_id, new_id = Keyring.from_texts([old]).ids[0], Keyring.from_texts([new]).ids[0]
    assert f":{old_id}:" in before
    assert f":{new_id}:" in after
    assert during.open(before) == "written before the rotation"
    assert during.open(after) == "written after"
    with pytest.raises(EncryptionKeyMissingError, match=f"key {old_id}, which is not among"):
        codec(new).open(before)


def test_views_show_placeholders_where_the_value_is_needed_raises() -> None:
    stored = codec(new_key()).seal(dumps({"secret": 1}))
    record = '{"seq":1,"ok":true,"v":' + stored + "}"
    unkeyed = PayloadCodec()
    assert unkeyed.view(stored) == ENCRYPTED
    assert json.loads(unkeyed.open_text(record, view=True))["v"] == ENCRYPTED
    with pytest.raises(EncryptionKeyMissingError):
        unkeyed.open_text(record)
    tampered = stored[:-5] + ("A" if stored[-5] != "A" else "B") + stored[-4:]
    assert codec(new_key()).view(tampered) in (ENCRYPTED, UNREADABLE)


def test_an_error_record_keeps_its_type_readable_and_seals_message_and_traceback() -> None:
    payloads = codec(new_key())
    text = payloads.seal_error(ErrorRecord("ValueError", "bad card 4111", "Traceback ... 4111", {"attempts": 2}))
    data = json.loads(text)
    assert data["type"] == "ValueError"
    assert data["attempts"] == 2
    assert "4111" not in text
    assert payloads.open(text) == {"type": "ValueError", "message": "bad card 4111",
                                   "traceback": "Traceback ... 4111", "attempts": 2}  # fmt: skip


def test_a_new_subkey_is_drawn_after_its_quota_and_old_ones_still_decrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bdurable.keyring.SUBKEY_USES", 3)
    payloads = codec(new_key())
    stored = [payloads.seal(dumps(i)) for i in range(10)]
    salts = {base64.urlsafe_b64decode(s[1:-1].rsplit(":", 1)[1])[:16] for s in stored}
    assert len(salts) == 4  # 3 payloads per subkey
    assert [payloads.open(s) for s in stored] == list(range(10))


def test_the_size_limit_applies_to_what_the_user_sent_not_to_the_stored_size() -> None:
    payloads = codec(new_key())
    text = encode_payload("x" * 990, what="input", max_bytes=1000)  # 992 bytes of JSON: allowed
    assert len(payloads.seal(text)) > 1000  # stored larger (nonce, tag, base64), and that is fine
    with pytest.raises(PayloadTooLargeError):
        encode_payload("x" * 1000, what="input", max_bytes=1000)


def test_settings_refuse_bad_keys_without_printing_them() -> None:
    with pytest.raises(ValueError, match="key #2 is 16 bytes") as info:
        Settings.from_env({"BDURABLE_ENCRYPTION_KEYS": f"{new_key()},{base64.b64encode(b'k' * 16).decode()}"})
    assert "a2s" not in str(info.value)
    with pytest.raises(ValueError, match="key #1 is not base64"):
        Settings.from_env({"BDURABLE_ENCRYPTION_KEYS": "not base64!"})
    key = new_key()
    with pytest.raises(ValueError, match=r"same key twice: key #2 repeats key #1$") as info:
        Settings.from_env({"BDURABLE_ENCRYPTION_KEYS": f"{key},{key}"})
    assert key not in str(info.value)
    url_safe = base64.urlsafe_b64encode(base64.b64decode(key)).decode().rstrip("=")  # the same key, spelled apart
    with pytest.raises(ValueError, match=r"same key twice: key #3 repeats key #1$"):
        Settings.from_env({"BDURABLE_ENCRYPTION_KEYS": f"{key},{new_key()},{url_safe}"})
    with pytest.MonkeyPatch.context() as patch:  # two different keys whose ids collide (1 in 2**32 for real)
        patch.setattr(hmac, "digest", lambda key, msg, digest: bytes(32))
        with pytest.raises(ValueError, match="key #2 has the same key id as key #1; replace one"):
            Settings.from_env({"BDURABLE_ENCRYPTION_KEYS": f"{key},{new_key()}"})
    parsed = Settings.from_env({"BDURABLE_ENCRYPTION_KEYS": f" {key} ,", "BDURABLE_COMPRESS_ABOVE": "off"})
    assert parsed.encryption_keys == (key,)
    assert parsed.compress_above is None
    assert key not in repr(parsed)


def test_a_custom_codec_is_applied_and_needed_to_read() -> None:
    settings = Settings(codec="protection_app:Reverse")
    payloads = PayloadCodec.from_settings(settings)
    stored = payloads.seal(dumps({"a": "b"}))
    assert stored.startswith('"$bdurable:1:c::')
    assert payloads.open(stored) == {"a": "b"}
    assert PayloadCodec().view(stored) == ENCRYPTED
    with pytest.raises(ValueError, match="cannot be loaded"):
        PayloadCodec.from_settings(Settings(codec="protection_app:Nothing"))
    with pytest.raises(ValueError, match="cannot be loaded: TypeError"):  # a class that cannot be made: exit 2
        PayloadCodec.from_settings(Settings(codec="json.decoder:JSONDecodeError"))


class _Failing(Reverse):
    """A codec whose decode raises what it is given."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def decode(self, data: bytes) -> bytes:
        raise self.error


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [(ConnectionError("KMS unreachable"), True), (TimeoutError("KMS slow"), True),
     (FileNotFoundError("no key file"), False), (ValueError("bad data"), False)],
)  # fmt: skip
def test_a_codec_that_did_not_answer_is_told_from_a_payload_it_cannot_decode(
    error: Exception, unavailable: bool
) -> None:
    """Only ConnectionError and TimeoutError say the codec's service is down (the step waits for it); any other
    error, OSErrors such as a missing file or gzip's BadGzipFile included, says the payload is damaged."""
    stored = PayloadCodec(custom=Reverse(), custom_name="app:Reverse").seal(dumps({"a": 1}))
    failing = PayloadCodec(custom=_Failing(error), custom_name="app:Failing")
    expected = CodecUnavailableError if unavailable else PayloadIntegrityError
    with pytest.raises(expected, match="the custom codec app:Failing"):
        failing.open(stored)
    assert failing.view(stored) == (UNAVAILABLE if unavailable else UNREADABLE)


class _TextCodec:
    """A custom codec with a common slip: it returns text where bytes are due."""

    def encode(self, data: bytes) -> str:
        return data.decode()

    def decode(self, data: bytes) -> str:
        return data.decode()


def test_a_custom_codec_that_returns_text_is_named_in_the_error() -> None:
    broken = PayloadCodec(custom=_TextCodec(), custom_name="app:TextCodec")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"custom codec app:TextCodec \(BDURABLE_CODEC\) returned str from encode"):
        broken.seal(dumps({"a": 1}))
    stored = PayloadCodec(custom=Reverse(), custom_name="app:Reverse").seal(dumps({"a": 1}))
    with pytest.raises(TypeError, match="returned str from decode"):
        broken.open(stored)
    bytes_like = PayloadCodec(custom=_BytesLikeCodec(), custom_name="app:BytesLike")  # type: ignore[arg-type]
    assert bytes_like.open(bytes_like.seal(dumps({"a": 1}))) == {"a": 1}  # bytearray, memoryview: bytes enough


class _BytesLikeCodec:
    def encode(self, data: bytes) -> bytearray:
        return bytearray(data)

    def decode(self, data: bytes) -> memoryview:
        return memoryview(data)


def test_records_holding_sealed_payloads_open_to_the_same_json_as_a_full_parse() -> None:
    payloads = codec(new_key(), compress_above=16)
    sealed = payloads.seal(dumps({"a": [1, "two"], "big": "x" * 50}))
    records = [
        '{"seq":3,"ok":true,"v":' + sealed + "}",
        "[" + sealed + "," + sealed + "]",
        '{"seq":4,"ok":false,"err":' + payloads.seal_error(ErrorRecord("E", "m " * 20, "t")) + "}",
        '{"cancel":"a \\"$bdurable:1::x:y\\" reason"}',  # the marker inside an engine string: not an envelope
    ]
    for record in records:
        assert json.loads(payloads.open_text(record)) == payloads.open_value(json.loads(record))
