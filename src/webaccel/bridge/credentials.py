"""Launch credentials and session secrets for the pages we launch.  Pure: no I/O.

A browser's command line is readable by every local user (``/proc/<pid>/cmdline``),
so nothing that keeps its value after start-up may travel there.  The rules:

1. :meth:`CredentialStore.issue` mints a *launch credential* for one worker id:
   256 random bits, bound to that id, valid for ``launch_ttl_s`` (60 s) and
   for one redemption.  It is the only secret in the worker page's URL, and so
   in the browser's argv.
2. :meth:`CredentialStore.redeem` trades it, once, for a *session secret*: the
   page POSTs ``{worker, launch}`` to ``/bridge/session`` at first load and
   keeps the secret from the response body in JS memory.  A credential that is
   unknown, bound to another worker id, expired or already redeemed is refused
   (:class:`CredentialError`); redeeming forgets it, so a copy read from
   ``/proc`` afterwards is useless.
3. The session secret never appears in a URL, argv or log: the page presents it
   in the WebSocket handshake's ``Sec-WebSocket-Protocol`` header (browsers
   cannot set other headers on a WebSocket) and as ``Authorization: Bearer`` for
   model bytes.  It stays valid for reconnects of the same page until
   :meth:`CredentialStore.forget` (the worker closed).
4. A worker id that has a credential or a session secret is *bound*: only its
   own session secret admits a bridge socket under it; the master token and
   join tokens do not.  (Which live socket wins is the hub's rule:
   :meth:`webaccel.bridge.endpoint.WorkerHub.claim`.)

Only SHA-256 digests of credentials and secrets are kept, and looked up by
digest, so no comparison's timing depends on a secret.  The clock is passed
in (``now``, seconds) so the rules are testable without sleeping.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field

from webaccel.errors import BadRequestError

LAUNCH_TTL_S = 60.0
# WebSocket subprotocols the page offers: the first names the protocol (the
# server selects it), the second carries the session secret.
SUBPROTOCOL = "webaccel.v1"
SECRET_SUBPROTOCOL_PREFIX = "webaccel.secret."


class CredentialError(BadRequestError):
    """A launch credential or session secret was refused (code ``BAD_REQUEST``)."""


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


@dataclass
class _Launch:
    worker_id: str
    expires: float


@dataclass
class CredentialStore:
    launch_ttl_s: float = LAUNCH_TTL_S
    _launches: dict[bytes, _Launch] = field(default_factory=dict)
    _secrets: dict[bytes, str] = field(default_factory=dict)  # digest -> worker id
    _bound: dict[str, set[bytes]] = field(default_factory=dict)  # worker id -> digests

    def issue(self, worker_id: str, now: float) -> str:
        """A single-use launch credential for ``worker_id``, valid until ``now + ttl``."""
        value = secrets.token_urlsafe(32)
        digest = _digest(value)
        self._launches[digest] = _Launch(worker_id, now + self.launch_ttl_s)
        self._bound.setdefault(worker_id, set()).add(digest)
        return value

    def redeem(self, worker_id: str, credential: str, now: float) -> str:
        """Trade a launch credential for the worker's session secret (once)."""
        digest = _digest(credential) if credential else b""
        launch = self._launches.get(digest)
        if launch is None:
            raise CredentialError(
                "this launch credential is unknown or was already redeemed; a page can "
                "redeem its credential once, at first load: relaunch the worker"
            )
        if launch.worker_id != worker_id:
            raise CredentialError(
                "this launch credential was issued for another worker id; open the URL "
                "the launcher built, unchanged"
            )
        del self._launches[digest]
        if now >= launch.expires:
            raise CredentialError(
                f"this launch credential expired ({self.launch_ttl_s:.0f} s after launch) "
                "before the page redeemed it; relaunch the worker (a slow machine can "
                "raise launch_ttl_s)"
            )
        self._bound[worker_id].discard(digest)
        secret = secrets.token_urlsafe(32)
        secret_digest = _digest(secret)
        self._secrets[secret_digest] = worker_id
        self._bound[worker_id].add(secret_digest)
        return secret

    def worker_of(self, secret: str) -> str | None:
        """The worker id a session secret belongs to, or None."""
        return self._secrets.get(_digest(secret)) if secret else None

    def bound(self, worker_id: str) -> bool:
        """Whether only this worker's session secret may open a bridge socket for it."""
        return bool(self._bound.get(worker_id))

    def forget(self, worker_id: str) -> None:
        """The worker is gone: its credential and session secret stop working."""
        # An expired, never redeemed credential keeps its worker id bound (a page
        # that never connected must not be impersonated later) until this call.
        for digest in self._bound.pop(worker_id, set()):
            self._launches.pop(digest, None)
            self._secrets.pop(digest, None)


def secret_from_subprotocols(offered: list[str]) -> str | None:
    """The session secret a page offered as a WebSocket subprotocol, if any."""
    for proto in offered:
        if proto.startswith(SECRET_SUBPROTOCOL_PREFIX):
            return proto[len(SECRET_SUBPROTOCOL_PREFIX) :]
    return None
