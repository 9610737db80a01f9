"""Who may act: the console's security model in one place.

- Reading needs nothing (the console is meant for a trusted network; keep it there, docs/console.md).
- An action (every POST) is allowed only when the console may act at all: not ``--read-only``, and either
  ``BDURABLE_CONSOLE_TOKEN`` is set or the console listens on loopback only. On a non-loopback address without
  a token it is read-only, whatever else is asked.
- With a token, an action carries it: ``Authorization: Bearer <token>`` (scripts), or the signed session cookie
  that the sign-in form sets (pages). Missing or wrong: 401. A wrong token (bearer or sign-in) is answered after
  half a second (:meth:`AccessPolicy.wrong_token_penalty`): a guess costs a connection that long. The token is
  the real defence: a long random one cannot be guessed (docs/security.md).
- Every action that is not a bearer call is a browser's, and must prove it is not cross-site: ``Sec-Fetch-Site``
  (when sent) is ``same-origin``, ``Origin`` (when sent) is the console's own, and the CSRF token of the page
  (a signed double-submit cookie, HttpOnly and SameSite=Strict) is echoed in ``X-CSRF-Token`` or a ``csrf``
  form field.
- One exception, where no token is set (so the console acts only on loopback): a script's JSON call, with
  ``Content-Type: application/json`` and neither ``Origin`` nor ``Sec-Fetch-Site``, acts as the CLI would (INTERFACE
  §10: a loopback console without a token is not read-only). No browser can send that cross-site: a JSON ``POST``
  from another origin needs a CORS preflight, which the console never grants, and browsers send ``Origin`` with it.
- Bound to loopback, the ``Host`` header must name loopback too, so a DNS-rebinding page cannot pose as
  same-origin.

Cookies and CSRF tokens are HMAC-SHA256 signed (the standard library's ``hmac``) with a key derived from the
token, or, without one, with a random key of this process (a restart only asks the browser to reload).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass, field

from starlette.requests import Request

__all__ = [
    "CSRF_COOKIE",
    "SESSION_COOKIE",
    "SESSION_SECONDS",
    "AccessPolicy",
    "Refusal",
    "is_loopback",
]

SESSION_COOKIE = "bdurable_session"
CSRF_COOKIE = "bdurable_csrf"
SESSION_SECONDS = 12 * 3600
WRONG_TOKEN_DELAY = 0.5  # seconds before a wrong token is answered, one at a time (slows guessing)
LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether a listen address or ``Host`` name is loopback only (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _host_name(host_header: str) -> str:
    """``Host`` without its port (``[::1]:8080`` -> ``::1``). Anything after the name but a port keeps the
    header whole, so it is no loopback name (``127.0.0.1:80@evil.example`` is refused, not read as 127.0.0.1)."""
    if host_header.startswith("["):
        name, bracket, rest = host_header[1:].partition("]")
        return name if bracket and (not rest or (rest[0] == ":" and rest[1:].isdigit())) else host_header
    name, colon, port = host_header.partition(":")
    return name if not colon or port.isdigit() else host_header


def _is_script_call(request: Request) -> bool:
    """A JSON call without a browser's cross-site headers: what curl or a script sends, never a cross-site page."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    headers = request.headers
    return media_type == "application/json" and "origin" not in headers and "sec-fetch-site" not in headers


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is refused, with its HTTP status."""

    status: int
    message: str
    wrong_token: bool = False  # answered after the policy's penalty (wrong_token_penalty)


@dataclass
class AccessPolicy:
    """The console's rules, fixed at start-up from ``--host``, ``--read-only`` and the token."""

    host: str
    read_only: bool = False
    token: str | None = None
    _key: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        secret = self.token.encode() if self.token else secrets.token_bytes(32)
        self._key = hmac.new(secret, b"bdurable-console-cookies", hashlib.sha256).digest()

    # -- what the console may do -------------------------------------------------------------------------

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def actions_enabled(self) -> bool:
        return not self.read_only and (self.token is not None or self.loopback)

    @property
    def sign_in_required(self) -> bool:
        return self.actions_enabled and self.token is not None

    def why_read_only(self) -> str | None:
        """What the pages say when actions are off, or ``None`` when they are on."""
        if self.read_only:
            return "read-only (--read-only)"
        if not self.actions_enabled:
            return "read-only: it listens on a non-loopback address without BDURABLE_CONSOLE_TOKEN"
        return None

    # -- requests ----------------------------------------------------------------------------------------

    def check_host(self, host_header: str | None) -> Refusal | None:
        """Bound to loopback, only loopback names are served (DNS rebinding)."""
        if not self.loopback:
            return None
        if host_header and is_loopback(_host_name(host_header)):
            return None
        return Refusal(400, "this console listens on loopback: open it as http://127.0.0.1 or http://localhost")

    def signed_in(self, request: Request) -> bool:
        if self.token is None:
            return False
        return self._verify_session(request.cookies.get(SESSION_COOKIE))

    def may_act(self, request: Request) -> bool:
        """Whether the pages should offer actions to this browser (the server checks again on each POST)."""
        return self.actions_enabled and (self.token is None or self.signed_in(request))

    def check_action(self, request: Request, form_csrf: str | None = None) -> Refusal | None:
        """``None`` when this POST may act; else why not."""
        if not self.actions_enabled:
            return Refusal(403, f"this console is {self.why_read_only()}")
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and credentials:
            if self.token is None:
                return Refusal(401, "no BDURABLE_CONSOLE_TOKEN is set: bearer tokens are not accepted")
            if hmac.compare_digest(credentials.strip().encode(), self.token.encode()):
                return None  # browsers never add this header by themselves: no cross-site check needed
            return Refusal(401, "wrong token", wrong_token=True)
        if self.token is not None and not self.signed_in(request):
            return Refusal(401, "sign in, or send Authorization: Bearer <BDURABLE_CONSOLE_TOKEN>")
        if self.token is None and _is_script_call(request):
            return None  # loopback without a token: a script on this machine acts (see the module's docstring)
        return self.check_same_origin(request, form_csrf)

    def check_same_origin(self, request: Request, form_csrf: str | None = None) -> Refusal | None:
        """A browser's POST must come from the console's own pages."""
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return Refusal(403, f"cross-site request refused (Sec-Fetch-Site: {site})")
        origin = request.headers.get("origin")
        if origin is not None and origin != self.own_origin(request):
            return Refusal(403, "cross-site request refused (Origin does not match)")
        sent = request.headers.get("x-csrf-token") or form_csrf
        cookie = request.cookies.get(CSRF_COOKIE)
        if not sent or not cookie or not hmac.compare_digest(sent, cookie) or not self._verify_csrf(cookie):
            if site is None and origin is None and self.token is None:  # not a browser's, by its headers
                return Refusal(403, "missing CSRF token: a script sends Content-Type: application/json")
            return Refusal(403, "missing or stale CSRF token: reload the page and try again")
        return None

    @staticmethod
    def own_origin(request: Request) -> str:
        return f"{request.url.scheme}://{request.headers.get('host', '')}"

    # -- tokens ------------------------------------------------------------------------------------------

    @staticmethod
    async def wrong_token_penalty() -> None:
        """Wait before answering a wrong token (a right token never waits). Each wrong guess waits on its own, so
        a flood of them holds each connection half a second, never a queue that grows."""
        await asyncio.sleep(WRONG_TOKEN_DELAY)

    def token_matches(self, offered: str) -> bool:
        return self.token is not None and hmac.compare_digest(offered.encode(), self.token.encode())

    def new_session(self) -> str:
        return self._sign(f"s.{int(time.time()) + SESSION_SECONDS}.{secrets.token_urlsafe(16)}")

    def csrf_for(self, request: Request) -> tuple[str, bool]:
        """The browser's CSRF token, and whether it is new (to be set as a cookie)."""
        cookie = request.cookies.get(CSRF_COOKIE)
        if cookie and self._verify_csrf(cookie):
            return cookie, False
        return self._sign(f"c.{secrets.token_urlsafe(16)}"), True

    def _sign(self, value: str) -> str:
        mac = hmac.new(self._key, value.encode(), hashlib.sha256).digest()
        return f"{value}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"

    def _verified(self, signed: str | None, kind: str) -> list[str] | None:
        if not signed or "." not in signed:
            return None
        value, _, _ = signed.rpartition(".")
        if not hmac.compare_digest(self._sign(value), signed):
            return None
        parts = value.split(".")
        return parts if parts[0] == kind else None

    def _verify_session(self, signed: str | None) -> bool:
        parts = self._verified(signed, "s")
        return parts is not None and len(parts) == 3 and parts[1].isdigit() and int(parts[1]) > time.time()

    def _verify_csrf(self, signed: str) -> bool:
        return self._verified(signed, "c") is not None
