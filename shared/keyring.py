"""The encryption keys of ``BDURABLE_ENCRYPTION_KEYS``, and AES-256-GCM with them.

Each key is known by a short id (8 hex digits, an HMAC of the key: it names the key in envelopes and error
messages without revealing it), so a reader picks the right key at once and can say precisely which one it
lacks. The first key encrypts; every listed key decrypts, which is what makes a rotation lose nothing.

Why payloads are not encrypted directly under the configured key: AES-GCM with random 96-bit nonces is safe for
about 2^32 messages per key (NIST SP 800-38D), which a busy engine reaches in days. So each process encrypts
under a subkey derived from the key and a random 128-bit salt (HMAC-SHA256, a single-block KDF in the manner of
NIST SP 800-108), and draws a new salt every 2^24 payloads: a nonce then only has to be unique among at most 2^24
messages of one subkey, where a collision is below 2^-48. The salt travels with the ciphertext; readers derive the
subkey again (cached, since one salt serves millions of payloads).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["AUTH_FAILED", "Key", "Keyring", "check_keys", "parse_key"]

SALT_BYTES = 16
NONCE_BYTES = 12
TAG_BYTES = 16
SUBKEY_USES = 1 << 24  # payloads encrypted under one subkey before a process draws a new salt
_ID_LABEL = b"bdurable key id/1"
_SUBKEY_LABEL = b"bdurable payload subkey/1"
_CACHED_SUBKEYS = 256

AUTH_FAILED = "authentication failed"  # what a tampered (or truncated) ciphertext reports


def parse_key(text: str, position: int) -> bytes:
    """One key of ``BDURABLE_ENCRYPTION_KEYS`` (standard or URL-safe base64 of 32 bytes).

    Errors name the key by its position, never by its value.
    """
    cleaned = text.strip().replace("-", "+").replace("_", "/").rstrip("=")
    try:
        raw = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"BDURABLE_ENCRYPTION_KEYS: key #{position} is not base64") from None
    if len(raw) != 32:
        raise ValueError(
            f"BDURABLE_ENCRYPTION_KEYS: key #{position} is {len(raw)} bytes; AES-256 needs 32 "
            "(make one with: python -c 'import os, base64; print(base64.b64encode(os.urandom(32)).decode())')"
        )
    return raw


def check_keys(texts: Sequence[str]) -> None:
    """Refuse a malformed or repeated key list (at startup, before anything is written with it), naming keys by
    their positions (``#1`` first), never by their values."""
    secrets = [parse_key(text, i + 1) for i, text in enumerate(texts)]
    first: dict[str, int] = {}  # key id -> the first position holding it
    for position, key in enumerate(Keyring(secrets).keys, start=1):
        earlier = first.setdefault(key.id, position)
        if earlier == position:
            continue
        if secrets[earlier - 1] == secrets[position - 1]:  # also one key written in both base64 alphabets
            raise ValueError(
                f"BDURABLE_ENCRYPTION_KEYS lists the same key twice: key #{position} repeats key #{earlier}"
            )
        raise ValueError(  # two keys whose 4-byte ids collide: a payload could not say which one sealed it
            f"BDURABLE_ENCRYPTION_KEYS: key #{position} has the same key id as key #{earlier}; replace one of them "
            "with a new key"
        )


class Key:
    """One AES-256 key: its id, encryption under rotating subkeys, decryption of what any process sealed."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self.id = hmac.digest(secret, _ID_LABEL, "sha256")[:4].hex()
        self._lock = threading.Lock()
        self._salt = b""
        self._aead: AESGCM | None = None
        self._uses = SUBKEY_USES
        self._readers: OrderedDict[bytes, AESGCM] = OrderedDict()

    def __repr__(self) -> str:
        return f"<Key {self.id}>"

    def _subkey(self, salt: bytes) -> AESGCM:
        return AESGCM(hmac.digest(self._secret, _SUBKEY_LABEL + salt, "sha256"))

    def encrypt(self, data: bytes, header: bytes) -> bytes:
        """``salt || nonce || ciphertext+tag``; ``header`` is authenticated too (it says how to read the rest)."""
        with self._lock:
            if self._uses >= SUBKEY_USES or self._aead is None:
                self._salt, self._aead, self._uses = os.urandom(SALT_BYTES), None, 0
                self._aead = self._subkey(self._salt)
            self._uses += 1
            salt, aead = self._salt, self._aead
        nonce = os.urandom(NONCE_BYTES)
        return salt + nonce + aead.encrypt(nonce, data, header)

    def decrypt(self, blob: bytes, header: bytes) -> bytes:
        """The plaintext, or ``ValueError`` when the blob is not exactly what ``encrypt`` produced."""
        if len(blob) < SALT_BYTES + NONCE_BYTES + TAG_BYTES:
            raise ValueError(f"{AUTH_FAILED}: the ciphertext is truncated")
        salt, nonce = blob[:SALT_BYTES], blob[SALT_BYTES : SALT_BYTES + NONCE_BYTES]
        with self._lock:
            aead = self._readers.get(salt)
            if aead is None:
                aead = self._readers[salt] = self._subkey(salt)
                if len(self._readers) > _CACHED_SUBKEYS:
                    self._readers.popitem(last=False)
        try:
            return aead.decrypt(nonce, blob[SALT_BYTES + NONCE_BYTES :], header)
        except InvalidTag:
            raise ValueError(AUTH_FAILED) from None


class Keyring:
    """The configured keys: the first encrypts, each decrypts what was encrypted under it."""

    def __init__(self, secrets: Sequence[bytes]) -> None:
        self.keys = [Key(secret) for secret in secrets]
        self._by_id = {key.id: key for key in self.keys}

    @classmethod
    def from_texts(cls, texts: Sequence[str]) -> Keyring:
        return cls([parse_key(text, i + 1) for i, text in enumerate(texts)])

    @property
    def primary(self) -> Key | None:
        return self.keys[0] if self.keys else None

    def get(self, key_id: str) -> Key | None:
        return self._by_id.get(key_id)

    @property
    def ids(self) -> list[str]:
        return [key.id for key in self.keys]
