"""What a payload looks like at rest in Redis: plain JSON, or a sealed envelope (compressed, custom-encoded,
encrypted).

Payloads cross Redis as JSON text that the Lua scripts embed without parsing (docs/architecture.md, "The wire").
A sealed payload keeps that property: it is itself a small JSON value, one string::

    "$bdurable:1:<steps>:<key id>:<data>"

``steps`` lists what was applied to the JSON bytes, in order: ``z`` (zstd), ``c`` (the custom codec of
``BDURABLE_CODEC``); ``key id`` names the AES-256-GCM key (empty: not encrypted); ``data`` is URL-safe base64 of
the result (for an encrypted one, ``salt || nonce || ciphertext+tag``, the prefix up to ``data`` authenticated as
associated data, so no step can be stripped or swapped). Lua copies such a string wherever it copies a payload;
an error record keeps its ``type`` in clear and holds its message and traceback as such strings, so the scripts
that read inside error records (``wrap_error``) carry the sealed message over untouched.

One :class:`PayloadCodec`, built from Settings, seals every payload the store writes and opens every payload read
back. Opening walks a record for sealed strings only when its text contains the marker (a substring search), so
unsealed records cost nothing. A plain payload whose text happens to contain the marker is sealed anyway (with
no step at all), so no user value is ever mistaken for an envelope.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import threading
from typing import Any, Protocol, runtime_checkable

import zstandard

from bdurable.codec import dumps, loads
from bdurable.config import Settings
from bdurable.errors import EncryptionKeyMissingError, PayloadIntegrityError, PayloadUnreadableError
from bdurable.keyring import Keyring
from bdurable.wire import ErrorRecord

__all__ = [
    "ENCRYPTED",
    "MARKER",
    "PREFIX",
    "UNAVAILABLE",
    "UNREADABLE",
    "CodecUnavailableError",
    "CustomCodec",
    "PayloadCodec",
    "load_custom_codec",
]

PREFIX = "$bdurable:"
MARKER = '"' + PREFIX  # how the JSON text of a sealed string begins: what `open_text` looks for
VERSION = "1"
ENCRYPTED = "<encrypted>"  # what a view shows for a payload it has no key (or codec) for
UNREADABLE = "<unreadable: failed its integrity check>"  # ... and for one that was tampered with or corrupted
UNAVAILABLE = "<unavailable: the custom codec did not answer>"  # ... and while its codec's service is down
ZSTD_LEVEL = 3  # measured in bench/bench_protection.py's notes: zstd-3 is 5x faster than zlib-6 at its ratio
MAX_DECOMPRESSED = 1 << 30  # a frame claiming more is corrupt (payloads are limited to BDURABLE_MAX_PAYLOAD)


@runtime_checkable
class CustomCodec(Protocol):
    """What ``BDURABLE_CODEC=module:object`` names: bytes in, bytes out, and back."""

    def encode(self, data: bytes) -> bytes: ...

    def decode(self, data: bytes) -> bytes: ...


class CodecUnavailableError(PayloadUnreadableError):
    """The custom codec (``BDURABLE_CODEC``) raised ``ConnectionError`` or ``TimeoutError`` while decoding: the
    service behind it (a KMS) did not answer, which says nothing about the payload. A dispatcher replaying a
    workflow waits and tries again instead of failing the run. Any other exception, other kinds of ``OSError``
    included (a ``BadGzipFile``, a missing key file), is a ``PayloadIntegrityError``. Not public: callers catch
    ``PayloadUnreadableError``."""


def load_custom_codec(spec: str) -> CustomCodec:
    """The object ``module:object`` names (``object`` may be dotted; a class is instantiated without arguments)."""
    module_name, _, attribute = spec.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
        if isinstance(found, type):
            found = found()
    except Exception as exc:  # whatever the module or the class raises: the setting is wrong (CLI exit 2)
        raise ValueError(f"BDURABLE_CODEC={spec!r} cannot be loaded: {type(exc).__name__}: {exc}") from None
    if not isinstance(found, CustomCodec):
        raise ValueError(f"BDURABLE_CODEC={spec!r} has no encode(bytes) -> bytes and decode(bytes) -> bytes")
    return found


class _Zstd(threading.local):
    """zstd contexts, one pair per thread (a context is not thread-safe; making one per payload costs 3x)."""

    def __init__(self) -> None:
        self.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        self.decompressor = zstandard.ZstdDecompressor()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


class PayloadCodec:
    """Seals payloads on their way into Redis and opens them on their way out (see the module's docstring).

    ``plain_bytes`` and ``stored_bytes`` count what went through :meth:`seal` (the size the user sent, the size
    Redis holds), for the metrics.
    """

    def __init__(
        self,
        *,
        keyring: Keyring | None = None,
        compress_above: int | None = 4096,
        custom: CustomCodec | None = None,
        custom_name: str = "",
    ) -> None:
        self.keyring = keyring if keyring is not None and keyring.keys else None
        self.compress_above = compress_above
        self.custom = custom
        self.custom_name = custom_name
        self._zstd = _Zstd()
        # Every payload is sealed when it is encrypted or custom-encoded; otherwise only large ones (compressed).
        self.protected = self.keyring is not None or custom is not None
        self._threshold = compress_above if compress_above is not None else float("inf")
        self.plain_bytes = 0
        self.stored_bytes = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> PayloadCodec:
        custom = load_custom_codec(settings.codec) if settings.codec else None
        return cls(
            keyring=Keyring.from_texts(settings.encryption_keys),
            compress_above=settings.compress_above,
            custom=custom,
            custom_name=settings.codec or "",
        )

    def describe(self) -> str:
        """One line on how payloads are stored (for ``bdurable doctor`` and logs)."""
        parts = []
        if self.keyring is not None:
            ids = self.keyring.ids
            others = f"; {len(ids) - 1} more for decryption only" if len(ids) > 1 else ""
            parts.append(f"encrypted with AES-256-GCM under key {ids[0]}{others}")
        else:
            parts.append("NOT encrypted (set BDURABLE_ENCRYPTION_KEYS)")
        if self.custom is not None:
            parts.append(f"encoded by the custom codec {self.custom_name}")
        if self.compress_above is not None:
            parts.append(f"compressed (zstd) above {self.compress_above} bytes")
        return ", ".join(parts)

    # -- sealing -------------------------------------------------------------------------------------------

    def seal(self, text: str) -> str:
        """The stored form of a payload's JSON text: itself, or a sealed string (JSON text as well)."""
        if not self.protected and MARKER not in text and self._small(text):
            size = len(text)
            self.plain_bytes += size
            self.stored_bytes += size
            return text
        data = text.encode()
        steps = ""
        if len(data) > self._threshold:
            packed = self._zstd.compressor.compress(data)
            if len(packed) < len(data):
                data, steps = packed, "z"
        if self.custom is not None:
            data, steps = self._custom_encode(data), steps + "c"
        key_id = ""
        if self.keyring is not None:
            key = self.keyring.primary
            assert key is not None
            key_id = key.id
            data = key.encrypt(data, self._header(steps, key_id).encode())
        sealed = f'"{self._header(steps, key_id)}{_b64(data)}"'
        size = len(text.encode())
        self.plain_bytes += size
        if not self.protected and MARKER not in text and len(sealed) >= size:
            self.stored_bytes += size  # compression did not pay for the envelope's base64: stored as it is
            return text
        self.stored_bytes += len(sealed)
        return sealed

    def _small(self, text: str) -> bool:
        """Whether the text is at most the compression threshold in bytes (UTF-8 needs at most 4 per character,
        so most texts are decided without encoding them)."""
        return len(text) * 4 <= self._threshold or len(text.encode()) <= self._threshold

    def seal_error(self, record: ErrorRecord) -> str:
        """An error record's JSON text with its message and traceback sealed; its type (and the engine's own
        fields: task name, attempts, child id) stay readable, for the scripts and the operators."""
        return ErrorRecord(record.type, self.seal_string(record.message), self.seal_string(record.traceback),
                           record.extra).encode()  # fmt: skip

    def seal_error_text(self, text: str) -> str:
        """:meth:`seal_error` of an already encoded record."""
        if not self.protected and MARKER not in text and self._small(text):
            return text
        return self.seal_error(ErrorRecord.decode(text))

    def seal_string(self, value: str) -> str:
        """A string sealed as a string (an error's message); the empty string stays empty."""
        if not value or (not self.protected and not value.startswith(PREFIX) and self._small(value)):
            return value
        sealed = loads(self.seal(dumps(value)))
        return str(sealed)

    def seal_value(self, value: Any) -> Any:
        """A small recorded value (``ctx.now()``, ``uuid4()``, ``random()``) as JSON data, sealed when payloads are
        encrypted or custom-encoded."""
        return loads(self.seal(dumps(value))) if self.protected else value

    @staticmethod
    def _header(steps: str, key_id: str) -> str:
        return f"{PREFIX}{VERSION}:{steps}:{key_id}:"

    # -- opening -------------------------------------------------------------------------------------------

    def open_text(self, text: str, *, view: bool = False) -> str:
        """JSON text read from Redis (a payload, or a record holding payloads) with every sealed string replaced
        by the value it seals. ``view``: a payload that cannot be opened becomes a placeholder instead of raising
        :class:`PayloadUnreadableError`."""
        if MARKER not in text:
            return text
        spliced = self._splice(text, view)
        if spliced is not None:
            return spliced
        return dumps(self.open_value(loads(text), view=view))

    def _splice(self, text: str, view: bool) -> str | None:
        """``text`` with each sealed string replaced, as text, by the JSON it seals: no parse of the record (an
        inbox entry, an error record), which is what makes opening cheap. A sealed string holds no quote or
        backslash, so it ends at the next quote; it is spliced only where it is a whole JSON value (after ``:``,
        ``,`` or ``[`` or at the start, and before ``,``, ``}``, ``]`` or the end), else ``None``: parse instead."""
        parts: list[str] = []
        at = 0
        while (begin := text.find(MARKER, at)) >= 0:
            end = text.find('"', begin + 1)
            if end < 0:
                return None
            before = text[begin - 1] if begin > 0 else ":"
            after = text[end + 1] if end + 1 < len(text) else "}"
            if before not in ":,[" or after not in ",}]":
                return None
            try:
                opened = self._unseal(text[begin + 1 : end]).decode()
            except PayloadUnreadableError as exc:
                if not view:
                    raise
                opened = dumps(_placeholder(exc))
            parts += [text[at:begin], opened]
            at = end + 1
        parts.append(text[at:])
        return "".join(parts)

    def open(self, text: str, *, view: bool = False) -> Any:
        """The value of a payload (or record) read from Redis."""
        return loads(self.open_text(text, view=view))

    def view(self, text: str | None) -> Any:
        """For read-only views: the value, placeholders for what cannot be opened, the raw text when it is not
        JSON at all (a corrupt value is shown, never fails the view); ``None`` stays ``None``."""
        if text is None:
            return None
        try:
            return self.open(text, view=True)
        except ValueError:
            return text

    def open_value(self, value: Any, *, view: bool = False) -> Any:
        """Parsed JSON data with every sealed string replaced by the value it seals (not walked again)."""
        if isinstance(value, str):
            if not value.startswith(PREFIX):
                return value
            try:
                return loads(self._unseal(value))
            except PayloadUnreadableError as exc:
                if not view:
                    raise
                return _placeholder(exc)
        if isinstance(value, dict):
            return {key: self.open_value(item, view=view) for key, item in value.items()}
        if isinstance(value, list):
            return [self.open_value(item, view=view) for item in value]
        return value

    def open_error(self, record: ErrorRecord, *, view: bool = False) -> ErrorRecord:
        """An error record with its message and traceback opened."""
        return ErrorRecord(
            record.type,
            str(self.open_value(record.message, view=view)),
            str(self.open_value(record.traceback, view=view)),
            record.extra,
        )

    def _unseal(self, sealed: str) -> bytes:
        """The JSON bytes a sealed string holds."""
        parts = sealed.split(":", 4)
        if len(parts) != 5 or parts[1] != VERSION:
            raise PayloadIntegrityError(f"a stored payload is not a b-durable envelope of version {VERSION}")
        _, _, steps, key_id, encoded = parts
        try:
            data = base64.urlsafe_b64decode(encoded.encode("ascii"))
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raise PayloadIntegrityError("a stored payload's data is not valid base64 (corrupted in Redis)") from None
        if key_id:
            key = self.keyring.get(key_id) if self.keyring is not None else None
            if key is None:
                have = f"this process has {', '.join(self.keyring.ids)}" if self.keyring else "none is configured"
                raise EncryptionKeyMissingError(
                    f"a stored payload is encrypted with key {key_id}, which is not among BDURABLE_ENCRYPTION_KEYS "
                    f"({have}); add that key to read it"
                )
            try:
                data = key.decrypt(data, self._header(steps, key_id).encode())
            except ValueError as exc:
                raise PayloadIntegrityError(
                    f"a stored payload encrypted with key {key_id} failed its integrity check ({exc}): it was "
                    "tampered with or corrupted in Redis"
                ) from None
        if "c" in steps:
            if self.custom is None:
                raise EncryptionKeyMissingError(
                    "a stored payload was encoded by a custom codec and BDURABLE_CODEC is not set in this process"
                )
            data = self._custom_decode(data)
        if "z" in steps:
            data = self._decompress(data)
        return data

    def _custom_encode(self, data: bytes) -> bytes:
        assert self.custom is not None
        return self._bytes_from(self.custom.encode(data), "encode")

    def _bytes_from(self, value: object, method: str) -> bytes:
        """A custom codec's answer as bytes (``bytearray`` and ``memoryview`` too); anything else, a ``str``
        first of all, fails here naming the codec, not later deep in base64 or JSON."""
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value)
        raise TypeError(
            f"the custom codec {self.custom_name} (BDURABLE_CODEC) returned {type(value).__name__} from "
            f"{method}(); it must return bytes"
        )

    def _custom_decode(self, data: bytes) -> bytes:
        assert self.custom is not None
        try:
            decoded = self.custom.decode(data)
        except (ConnectionError, TimeoutError) as exc:  # its service (a KMS) did not answer this time
            raise CodecUnavailableError(
                f"the custom codec {self.custom_name} is unavailable: {type(exc).__name__}: {exc}"
            ) from None
        except Exception as exc:
            raise PayloadIntegrityError(
                f"the custom codec {self.custom_name} cannot decode a stored payload: {type(exc).__name__}: {exc}"
            ) from None
        return self._bytes_from(decoded, "decode")

    def _decompress(self, data: bytes) -> bytes:
        try:
            size = zstandard.frame_content_size(data)
            if size < 0 or size > MAX_DECOMPRESSED:
                raise zstandard.ZstdError(f"the frame declares {size} bytes")
            return self._zstd.decompressor.decompress(data)
        except zstandard.ZstdError as exc:
            raise PayloadIntegrityError(f"a stored payload's compressed data is corrupt ({exc})") from None


def _placeholder(exc: PayloadUnreadableError) -> str:
    if isinstance(exc, CodecUnavailableError):
        return UNAVAILABLE
    return ENCRYPTED if isinstance(exc, EncryptionKeyMissingError) else UNREADABLE
