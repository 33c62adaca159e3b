"""Browser processes that never outlive us.

Each browser runs in its own session/process group (``setsid``) with
``PR_SET_PDEATHSIG = SIGKILL``, so the kernel kills it when we die, even by
SIGKILL (docs/FACTS.md: plain Popen or ``start_new_session`` leave Chromium
running).  PDEATHSIG fires when the *thread* that forked exits, so every
browser is forked from one long-lived spawner thread.  On a normal exit,
an exception, SIGINT or SIGTERM, :func:`terminate_all` ends each process
group and deletes its profile directory.

When we run as root, browsers run as an unprivileged account instead
(:func:`browser_user`, created with ``useradd --system`` on first use), so
Chromium's sandbox can be on and a compromised renderer is not root.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import ctypes
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent(parent_pid: int) -> None:
    # Runs in the child between fork and exec: async-signal-safe calls only.
    os.setsid()
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


class _Spawner:
    """One daemon thread that forks every browser (see the module docstring)."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[concurrent.futures.Future[subprocess.Popen[bytes]], dict]] = (
            queue.Queue()
        )
        self._thread = threading.Thread(target=self._loop, name="webaccel-spawner", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            fut, kwargs = self._jobs.get()
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                pid = os.getpid()

                def die_with_parent(p: int = pid) -> None:
                    _die_with_parent(p)

                proc: subprocess.Popen[bytes] = subprocess.Popen(
                    preexec_fn=die_with_parent, **kwargs
                )
                fut.set_result(proc)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                fut.set_exception(exc)

    def spawn(self, **kwargs: object) -> subprocess.Popen[bytes]:
        fut: concurrent.futures.Future[subprocess.Popen[bytes]] = concurrent.futures.Future()
        self._jobs.put((fut, kwargs))
        return fut.result()


_spawner: _Spawner | None = None
_spawner_lock = threading.Lock()
_live: dict[int, BrowserProcess] = {}
_live_lock = threading.Lock()


_cleanup_installed = False


def _get_spawner() -> _Spawner:
    global _spawner
    install_cleanup()
    with _spawner_lock:
        if _spawner is None:
            _spawner = _Spawner()
        return _spawner


def install_cleanup() -> None:
    """Register the atexit hook and a SIGTERM handler (call from the main thread).

    SIGTERM's default action skips atexit; it becomes SystemExit so cleanup
    runs.  Only when nobody else handles SIGTERM, and only from the main
    thread (signal handlers can only be set there).  PDEATHSIG still covers
    the cases this cannot.
    """
    global _cleanup_installed
    with _spawner_lock:
        if not _cleanup_installed:
            atexit.register(terminate_all)
            _cleanup_installed = True
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):

        def on_term(signum: int, frame: object) -> None:
            terminate_all()
            raise SystemExit(128 + signum)

        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, on_term)


class BrowserProcess:
    """A browser process group plus the profile it uses."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        profile_dir: Path,
        log_path: Path,
        env: dict[str, str] | None = None,
        keep_profile: bool = False,
        on_exit: Callable[[], None] | None = None,
        user: BrowserUser | None = None,
    ) -> None:
        """``keep_profile``: a persistent profile (see :class:`ProfileLease`) is left in
        place; ``on_exit`` runs once the process group is gone (releases the lease).
        ``user``: run as that account (its home as HOME and cwd; the profile must
        be its own: :func:`hand_over`)."""
        self.argv = list(argv)
        self.user = user
        as_user: dict[str, object] = {}
        if user is not None:
            env = {**(env if env is not None else os.environ), **user.environ()}
            as_user = {
                "user": user.uid,
                "group": user.gid,
                "extra_groups": [],
                "cwd": str(user.home),
            }
        self.profile_dir = profile_dir
        self.keep_profile = keep_profile
        self._on_exit = on_exit
        self.log_path = log_path
        self._log_file = open(log_path, "wb")  # noqa: SIM115 - closed in terminate()
        self.popen = _get_spawner().spawn(
            args=self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            close_fds=True,
            **as_user,
        )
        self.pid = self.popen.pid
        with _live_lock:
            _live[self.pid] = self

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def log_tail(self, limit: int = 2000) -> str:
        with contextlib.suppress(OSError):
            data = self.log_path.read_bytes()[-limit:]
            return data.decode(errors="replace").strip()
        return ""

    def terminate(self, grace: float = 2.0) -> None:
        """SIGTERM the browser, then SIGKILL its whole group; delete the profile."""
        if self._ask_to_exit():
            deadline = time.monotonic() + grace
            while self.popen.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
        self._finish()

    async def terminate_async(self, grace: float = 2.0) -> None:
        """:meth:`terminate` without blocking the event loop (and without executor threads,
        which are gone during interpreter shutdown)."""
        if self._ask_to_exit():
            deadline = time.monotonic() + grace
            while self.popen.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        self._finish()

    def _ask_to_exit(self) -> bool:
        if self.popen.poll() is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            # Ends Chromium's tree in ~0.07 s (docs/FACTS.md).
            self.popen.send_signal(signal.SIGTERM)
        return True

    def _finish(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # helpers still in the group (renderers, gpu)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=2)
        with _live_lock:
            _live.pop(self.pid, None)
        self._log_file.close()
        if not self.keep_profile:
            shutil.rmtree(self.profile_dir, ignore_errors=True)
        if self._on_exit is not None:
            self._on_exit()
            self._on_exit = None
        with contextlib.suppress(OSError):
            self.log_path.unlink()


def terminate_all() -> None:
    with _live_lock:
        procs = list(_live.values())
    for proc in procs:
        try:
            proc.terminate(grace=1.0)
        except Exception:  # noqa: BLE001 - cleanup must go on for the others
            log.exception("could not terminate browser %s", proc.pid)


def live_pids() -> list[int]:
    with _live_lock:
        return list(_live)


class ProfileLease:
    """A persistent browser profile directory, held by one browser at a time.

    Browser storage (OPFS, Cache API) lives in the profile, so models cached
    by CID survive browser restarts only if the next browser gets the same
    profile.  Profiles live under ``$WEBACCEL_HOME/profiles/<family>-<n>`` and
    are taken with an exclusive ``flock`` that the kernel drops when the
    holder dies, so a killed run never leaves a profile locked.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, family: str, root: Path, limit: int = 64) -> ProfileLease | None:
        import fcntl

        root.mkdir(parents=True, exist_ok=True)
        for n in range(limit):
            path = root / f"{family}-{n}"
            fd = os.open(root / f"{family}-{n}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            path.mkdir(exist_ok=True)
            return cls(path, fd)
        return None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


DEFAULT_BROWSER_USER = "webaccel-browser"
_user_lock = threading.Lock()


@dataclass(frozen=True)
class BrowserUser:
    """The unprivileged account browsers run as when we are root."""

    name: str
    uid: int
    gid: int
    home: Path

    def environ(self) -> dict[str, str]:
        # Chromium writes crash reports and its config under HOME even with
        # --user-data-dir (docs/FACTS.md): it must be a directory this user owns.
        return {
            "HOME": str(self.home),
            "USER": self.name,
            "LOGNAME": self.name,
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "XDG_CACHE_HOME": str(self.home / ".cache"),
        }


def browser_user(name: str | None = None) -> BrowserUser:
    """The account named ``name`` ($WEBACCEL_BROWSER_USER, else ``webaccel-browser``),
    created as a system user with its own home under /var/lib if it does not exist.

    Raises :class:`~webaccel.errors.BrowserLaunchError` saying what to do when
    it cannot be created or is not unprivileged.
    """
    import pwd

    from webaccel.errors import BrowserLaunchError

    name = name or os.environ.get("WEBACCEL_BROWSER_USER") or DEFAULT_BROWSER_USER
    escape = (
        "create an unprivileged user yourself and name it in WEBACCEL_BROWSER_USER, "
        "or set WEBACCEL_SANDBOX=off to run browsers as root without a sandbox"
    )
    with _user_lock:
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            useradd = shutil.which("useradd") or shutil.which("useradd", path="/usr/sbin:/sbin")
            if useradd is None:
                raise BrowserLaunchError(
                    f"browsers run as the unprivileged user {name!r} when webaccel runs as "
                    f"root, and it does not exist; `useradd` is not installed to create it: "
                    f"{escape}"
                ) from None
            home = f"/var/lib/{name}"
            proc = subprocess.run(
                [useradd, "--system", "--user-group", "--create-home", "--home-dir", home,
                 "--shell", "/usr/sbin/nologin", "--comment", "webaccel browsers", name],
                capture_output=True,
                text=True,
                check=False,
            )
            try:
                pw = pwd.getpwnam(name)
            except KeyError:
                raise BrowserLaunchError(
                    f"could not create the unprivileged browser user {name!r} "
                    f"(`useradd --system {name}` said: {proc.stderr.strip() or proc.returncode}): "
                    f"{escape}"
                ) from None
            with contextlib.suppress(OSError):
                os.chmod(home, 0o700)  # useradd's HOME_MODE may leave it world-readable
            log.info("created system user %s (home %s) to run browsers", name, home)
        if pw.pw_uid == 0:
            raise BrowserLaunchError(f"browser user {name!r} has uid 0; {escape}")
        home_dir = Path(pw.pw_dir)
        if not home_dir.is_dir() or home_dir.stat().st_uid != pw.pw_uid:
            # An existing account without a home of its own (/nonexistent): give it one.
            home_dir = Path(f"/var/lib/{name}")
            home_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chown(home_dir, pw.pw_uid, pw.pw_gid)
        return BrowserUser(name, pw.pw_uid, pw.pw_gid, home_dir)


def hand_over(path: Path, user: BrowserUser) -> None:
    """Give ``path`` (a profile directory, recursively) to ``user``."""
    os.chown(path, user.uid, user.gid)
    for root, dirs, files in os.walk(path):
        for entry in (*dirs, *files):
            with contextlib.suppress(FileNotFoundError):
                os.chown(os.path.join(root, entry), user.uid, user.gid, follow_symlinks=False)


def unreachable_dir(path: Path, user: BrowserUser) -> Path | None:
    """The first directory above ``path`` that ``user`` may not enter, if any.

    Chromium given a ``--user-data-dir`` it cannot reach does not fail: it quietly
    uses the account's default profile, which every such browser then shares.
    """
    for parent in path.resolve().parents:
        st = parent.stat()
        if st.st_uid == user.uid:
            ok = st.st_mode & 0o100
        elif st.st_gid == user.gid:
            ok = st.st_mode & 0o010
        else:
            ok = st.st_mode & 0o001
        if not ok:
            return parent
    return None


def find_executable(
    label: str,
    env_var: str,
    candidates: Sequence[str],
    install: str,
    explicit: str | os.PathLike[str] | None = None,
) -> Path:
    """``explicit``, else ``$env_var``, else the first executable of ``candidates``
    (absolute paths or names on PATH); a typed error that says how to install it."""
    from webaccel.errors import BrowserNotFoundError

    wanted = explicit or os.environ.get(env_var)
    if wanted:
        path = Path(wanted)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise BrowserNotFoundError(
            f"{label} binary {str(path)!r} does not exist or is not executable; fix "
            f"{env_var} / the binary argument, or install it: {install}",
            details={"binary": str(path)},
        )
    for name in candidates:
        found = name if os.path.isabs(name) else shutil.which(name)
        if found and os.path.isfile(found) and os.access(found, os.X_OK):
            return Path(found)
    raise BrowserNotFoundError(
        f"{label} is not installed: run `{install}` (or `make setup`), or point {env_var} at "
        f"a {label} binary"
    )
