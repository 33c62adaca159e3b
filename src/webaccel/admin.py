"""Finding a running ``webaccel serve`` and managing its join tokens from another process.

As ``ipfs`` finds its daemon through ``$IPFS_PATH/api``, ``webaccel serve`` writes
``$WEBACCEL_HOME/serve.json`` once it listens: the URL to reach it on this
machine, its master key (the server's own token, which opens ``/admin``) and
the pid and start time of its process.  The file is written atomically
(a temporary file renamed over it) with mode 0600, and removed when the
server exits cleanly.  A server that was killed leaves it behind: a reader
tells that file from a live one by the process (gone, or another process that
got the same pid: its start time differs) and then by a failed connection.

:class:`AdminClient` speaks to ``/admin/tokens`` (list, issue, revoke; see
:func:`webaccel.browsers.remote.token_admin_routes`) and turns every failure
into a typed error that says what to do: no server running
(:class:`ServerNotRunningError`), a key the server refuses
(:class:`~webaccel.errors.UnauthorizedError`), a server that takes no
joining browsers or a token id it does not know
(:class:`~webaccel.errors.NotFoundError`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from webaccel import paths
from webaccel.errors import (
    InvalidInputError,
    NotFoundError,
    ServerNotRunningError,
    UnauthorizedError,
    UpstreamError,
    WebAccelError,
    error_from_code,
)

STATE_NAME = "serve.json"
KEY_ENV = "WEBACCEL_MASTER_KEY"
START_HINT = "start one with `webaccel serve --join` (or --listen ADDR)"
OVERRIDE_HINT = "or pass --api URL --key KEY"


def state_path() -> Path:
    """``$WEBACCEL_HOME/serve.json``."""
    return paths.home() / STATE_NAME


def local_url(url: str) -> str:
    """The URL a process on this machine uses for a server bound to ``url``'s host
    (a wildcard bind is reached on loopback)."""
    return url.replace("://0.0.0.0:", "://127.0.0.1:").replace("://[::]:", "://[::1]:")


def _process_started(pid: int) -> float | None:
    """The start time of process ``pid``, None when there is no such process."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:  # exists, owned by someone else: we cannot say more
        return -1.0


@dataclass(frozen=True)
class ServeState:
    url: str
    key: str
    pid: int
    started: float  # the process's start time (psutil), to tell a reused pid apart
    join: bool  # whether the server takes joining browsers (has /admin/tokens)
    path: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "master_key": self.key,
            "pid": self.pid,
            "started": self.started,
            "join": self.join,
        }

    def process_alive(self) -> bool:
        """Whether the process that wrote this still runs (same pid, same start time)."""
        started = _process_started(self.pid)
        if started is None:
            return False
        return started < 0 or abs(started - self.started) < 1.0


def write_state(url: str, key: str, *, join: bool, path: Path | None = None) -> ServeState:
    """Write this process's state file atomically, readable by its owner only."""
    target = path or state_path()
    state = ServeState(
        url=local_url(url),
        key=key,
        pid=os.getpid(),
        started=psutil.Process().create_time(),
        join=join,
        path=target,
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(state.to_json(), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return state


def read_state(path: Path | None = None) -> ServeState | None:
    """The state file as it is (None when there is none); ServerNotRunningError when it
    cannot be read."""
    target = path or state_path()
    try:
        raw = json.loads(target.read_text())
        return ServeState(
            url=str(raw["url"]),
            key=str(raw["master_key"]),
            pid=int(raw["pid"]),
            started=float(raw["started"]),
            join=bool(raw.get("join", True)),
            path=target,
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ServerNotRunningError(
            f"cannot read {target} ({type(exc).__name__}); delete it and "
            f"{START_HINT}, {OVERRIDE_HINT}"
        ) from None


def remove_state(state: ServeState) -> bool:
    """Remove the state file if it is still ``state``'s (another server may have
    written its own since); True when removed."""
    target = state.path or state_path()
    with contextlib.suppress(ServerNotRunningError):
        current = read_state(target)
        if current is not None and current.pid == state.pid and current.key == state.key:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            return True
    return False


def running_server(path: Path | None = None) -> ServeState:
    """The live server the state file names; ServerNotRunningError when there is no
    file, or the process that wrote it is gone (its stale file is removed then)."""
    target = path or state_path()
    state = read_state(target)
    if state is None:
        raise ServerNotRunningError(
            f"no webaccel server is running for this WEBACCEL_HOME (no {target}): "
            f"{START_HINT}, {OVERRIDE_HINT}"
        )
    if not state.process_alive():
        with contextlib.suppress(OSError):
            target.unlink()
        raise ServerNotRunningError(
            f"the webaccel server that wrote {target} (pid {state.pid}, {state.url}) is gone "
            f"without cleaning up (killed?); removed that stale file. {START_HINT[0].upper()}"
            f"{START_HINT[1:]}, {OVERRIDE_HINT}"
        )
    return state


# ------------------------------------------------------------------ the client
@dataclass(frozen=True)
class Target:
    """Where the admin requests go, and where that came from (for error messages)."""

    url: str
    key: str
    source: str  # "the state file PATH (pid N)" or "--api URL"
    key_source: str  # "--key or $WEBACCEL_MASTER_KEY" or "the state file"


def resolve_target(api: str | None = None, key: str | None = None) -> Target:
    """``--api``/``--key`` (``$WEBACCEL_MASTER_KEY``) where given, else the state file."""
    key = key or os.environ.get(KEY_ENV) or None
    given = f"--key or {KEY_ENV}"
    if api:
        if not re.match(r"^https?://[^/]+", api):
            raise InvalidInputError(
                f"--api must be a URL such as http://127.0.0.1:8700, got {api!r}"
            )
        url = api.rstrip("/")
        key_source = given
        if key is None:  # the state file's key, if it is this very server's
            with contextlib.suppress(ServerNotRunningError):
                state = read_state()
                if state is not None and state.url.rstrip("/") == url:
                    key, key_source = state.key, f"the state file {state.path}"
        if key is None:
            raise InvalidInputError(
                f"--api {url} needs the server's master key: pass --key KEY or set {KEY_ENV} "
                f"(the key is in {STATE_NAME} under WEBACCEL_HOME on the machine it runs on)"
            )
        return Target(url=url, key=key, source=f"--api {url}", key_source=key_source)
    state = running_server()
    return Target(
        url=state.url,
        key=key or state.key,
        source=f"the state file {state.path} (pid {state.pid})",
        key_source=given if key else f"the state file {state.path}",
    )


class AdminClient:
    """``/admin/tokens`` (and ``/api/v0/run``) of one server, with errors that say what
    to do."""

    def __init__(
        self, target: Target, *, timeout: float = 10.0, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.target = target
        self._http = httpx.Client(
            base_url=target.url,
            timeout=timeout,
            transport=transport,
            headers={"authorization": f"Bearer {target.key}"},
        )

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def list(self) -> list[dict[str, Any]]:
        tokens = self._call("GET", "/admin/tokens").get("tokens")
        if not isinstance(tokens, list):
            raise self._not_webaccel("its token list is not a list")
        return tokens

    def create(
        self, label: str = "", *, ttl_s: float | None = None, max_workers: int | None = None
    ) -> dict[str, Any]:
        """The new token (its secret included, shown this once) and ``join_url``."""
        body: dict[str, Any] = {"label": label}
        if ttl_s is not None:
            body["ttl_s"] = ttl_s
        if max_workers is not None:
            body["max_workers"] = max_workers
        made = self._call("POST", "/admin/tokens", json=body)
        path = made.get("join_path")
        if not isinstance(path, str) or not isinstance(made.get("token"), str):
            raise self._not_webaccel("it issued no token")
        urls = made.get("join_urls")
        made["join_url"] = urls[0] if isinstance(urls, list) and urls else self.target.url + path
        return made

    def revoke(self, token_id: str) -> dict[str, Any]:
        try:
            return self._call("DELETE", f"/admin/tokens/{_path_segment(token_id)}")
        except NotFoundError:
            self.list()  # raises the clearer error when the server has no /admin at all
            raise NotFoundError(
                f"no join token with id {token_id!r} on {self.target.url}; "
                "`webaccel tokens list` shows the ids",
                details={"id": token_id},
            ) from None

    # -------------------------------------------------------------- transport
    def run(self, body: dict[str, Any]) -> dict[str, Any]:
        """``webaccel run`` on this server (``POST /api/v0/run``, webaccel.run_route)."""
        return self._call("POST", "/api/v0/run", json=body)

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServerNotRunningError(
                f"no webaccel server answers at {self.target.url} (from {self.target.source}): "
                f"{type(exc).__name__}: {exc or 'no answer'}; {START_HINT}, {OVERRIDE_HINT}"
            ) from None
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.is_success:
            if not isinstance(body, dict):
                raise self._not_webaccel(f"it answered {resp.status_code} without a JSON object")
            return body
        err = body.get("error") if isinstance(body, dict) else None
        code = err.get("code") if isinstance(err, dict) else None
        message = err.get("message") if isinstance(err, dict) else None
        if resp.status_code == 401:
            raise UnauthorizedError(
                f"{self.target.url} refused the master key (from {self.target.key_source}): "
                f"pass that server's key with --key or {KEY_ENV} (it is in {STATE_NAME} "
                "under WEBACCEL_HOME where that server runs)"
            )
        if resp.status_code == 404 and path == "/admin/tokens":
            raise NotFoundError(
                f"{self.target.url} has no join tokens: it does not take browsers that join. "
                "Restart it with `webaccel serve --join` (loopback) or `--listen ADDR`"
            )
        if isinstance(code, str) and isinstance(message, str):
            raise error_from_code(code, message)
        raise self._not_webaccel(f"it answered {resp.status_code}")

    def _not_webaccel(self, why: str) -> WebAccelError:
        return UpstreamError(
            f"{self.target.url} does not answer as a webaccel server ({why}); "
            f"is --api right? ({self.target.source})"
        )


def _path_segment(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``12h``, ``7d``, ``2w`` -> seconds (above 0)."""
    match = _DURATION.match(text)
    seconds = float(match.group(1)) * _UNIT_S[match.group(2).lower()] if match else 0.0
    if seconds <= 0:
        raise InvalidInputError(
            f"--ttl must be a duration above 0 such as 3600, 90s, 30m, 12h or 7d; got {text!r}",
            details={"param": "ttl"},
        )
    return seconds


def describe_expiry(expires: float | None, now: float | None = None) -> str:
    if expires is None:
        return "never"
    left = expires - (time.time() if now is None else now)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(expires))
    return f"{stamp} (expired)" if left <= 0 else stamp


def token_state(tok: dict[str, Any], now: float | None = None) -> str:
    if tok.get("revoked"):
        return "revoked"
    expires = tok.get("expires")
    if isinstance(expires, (int, float)) and expires <= (time.time() if now is None else now):
        return "expired"
    return "active"
