"""A real Samba server for end-to-end tests, and an SMB client that acts like an analyst's PC.

:func:`samba_server` starts Debian's ``smbd`` in the foreground on 127.0.0.1 at a free port,
with its own ``smb.conf``, passdb, state and lock folders in a temporary folder, exporting
one share configured by the ``[optimizer]`` section of ``samba/smb.conf.example`` (the section
operators install), with only the site-specific lines replaced. The SMB account ``analyst``
has a password and is mapped (``username map``) onto the Unix account that runs the tests,
which is also the share's ``force user``: files land on disk as in production, owned by the
daemon's account. This needs no root (the passdb entry is made with ``pdbedit``, and smbd
never has to switch to another Unix user), so it runs the same on CI and on a laptop.

:class:`SmbClient` is smbprotocol's pure-Python client (what a Windows machine speaks) with a
private connection cache, closed on exit so no connection thread outlives a test.

If ``smbd`` is missing the tests fail with the fix in the message; with
``HEAVY_OPTIMIZER_SKIP_SAMBA=1`` (developer machines without Samba) they are skipped.
"""

from __future__ import annotations

import configparser
import contextlib
import errno
import grp
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import psutil
import pytest
import smbclient

from tests.daemon_harness import wait_for
from tests.paths import REPO_ROOT

#: Set to 1 to skip (not fail) the Samba tests where smbd is not installed.
SKIP_ENV = "HEAVY_OPTIMIZER_SKIP_SAMBA"
#: The share section operators add to smb.conf; the tests use it as is.
EXAMPLE_CONF = REPO_ROOT / "samba" / "smb.conf.example"
SHARE_NAME = "optimizer"
#: The SMB login of the stand-in analyst.
ANALYST = "analyst"
LOOPBACK = "127.0.0.1"
START_TIMEOUT_SECONDS = 20.0
STOP_TIMEOUT_SECONDS = 10.0
#: Lines of the example section that name site-specific things (see its "[adapt]" marks).
SITE_SPECIFIC = ("path", "valid users", "force user", "force group")


def samba_unavailable(reason: str) -> NoReturn:
    """Fail the test with the fix in the message, or skip it where the developer asked to."""
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{reason} ({SKIP_ENV}=1)")
    pytest.fail(f"{reason}. The Samba end-to-end tests need Debian's samba package (.ci/run "
                f"installs it: apt-get install samba smbclient); set {SKIP_ENV}=1 to skip them "
                "on a machine without Samba.", pytrace=False)


def find_samba_tool(name: str) -> str:
    """Path of a Samba program; /usr/sbin is often not on a normal user's PATH."""
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    samba_unavailable(f"{name} was not found (looked on PATH, in /usr/sbin and /usr/bin)")


def example_share_section(example: Path = EXAMPLE_CONF) -> dict[str, str]:
    """The ``[optimizer]`` section of the example smb.conf, option name -> value."""
    parser = configparser.ConfigParser(interpolation=None, comment_prefixes=("#", ";"),
                                       delimiters=("=",), strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(example.read_text(encoding="utf-8"), source=str(example))
    return dict(parser[SHARE_NAME])


@dataclass(frozen=True)
class SambaServer:
    """A running :func:`samba_server`."""

    host: str
    port: int
    share: str
    #: The exported folder, as the daemon on the server sees it.
    root: Path
    username: str
    password: str
    pid: int
    log_path: Path
    #: The share section smbd runs with (example + site-specific lines).
    share_options: dict[str, str]

    def unc(self, relative: str = "") -> str:
        """``\\\\host\\share\\relative`` with Windows separators."""
        parts = [part for part in relative.replace("\\", "/").split("/") if part]
        return "\\".join([f"\\\\{self.host}", self.share, *parts])

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _global_section(folder: Path, port: int) -> str:
    """Everything smbd keeps (passdb, tdbs, sockets, logs) goes under ``folder``."""
    dirs = {name: folder / name for name in ("private", "state", "cache", "lock", "pid",
                                             "ncalrpc")}
    for path in dirs.values():
        path.mkdir(mode=0o700)
    return f"""[global]
   server role = standalone server
   workgroup = HOTEST
   netbios name = HOTEST
   interfaces = {LOOPBACK}
   bind interfaces only = yes
   smb ports = {port}
   disable netbios = yes
   server min protocol = SMB2_10
   passdb backend = tdbsam:{dirs['private']}/passdb.tdb
   private dir = {dirs['private']}
   state directory = {dirs['state']}
   cache directory = {dirs['cache']}
   lock directory = {dirs['lock']}
   pid directory = {dirs['pid']}
   ncalrpc dir = {dirs['ncalrpc']}
   log file = {folder}/log.smbd
   max log size = 0
   log level = 1
   load printers = no
   printing = bsd
   printcap name = /dev/null
   disable spoolss = yes
   username map = {folder}/users.map
   idmap config * : backend = tdb
   idmap config * : range = 3000-7999
"""


def _share_options(root: Path) -> dict[str, str]:
    account = pwd.getpwuid(os.geteuid())
    options = example_share_section()
    missing = [name for name in SITE_SPECIFIC if name not in options]
    assert not missing, f"{EXAMPLE_CONF} lost its {missing} line(s)"
    options.update({"path": str(root), "valid users": account.pw_name,
                    "force user": account.pw_name,
                    "force group": grp.getgrgid(account.pw_gid).gr_name})
    return options


def _add_smb_account(pdbedit: str, conf: Path, unix_user: str, password: str) -> None:
    result = subprocess.run(
        [pdbedit, "-s", str(conf), "-t", "-a", "-u", unix_user],
        input=f"{password}\n{password}\n", capture_output=True, text=True, timeout=30,
        check=False)
    if result.returncode != 0:
        raise RuntimeError(f"pdbedit could not create the SMB account for {unix_user}:\n"
                           f"{result.stdout}\n{result.stderr}")


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    def listening() -> bool:
        if proc.poll() is not None:
            log = log_path.read_text(errors="replace") if log_path.exists() else ""
            raise RuntimeError(f"smbd exited with status {proc.returncode} before listening "
                               f"on port {port}:\n{log[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.2):
            return True
        return False

    wait_for(listening, timeout=START_TIMEOUT_SECONDS, message=f"smbd listening on {port}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM smbd by pid, then end what is left of its process group (helpers, clients)."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_SECONDS)
    group = []
    for candidate in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(candidate.pid) == proc.pid:
                group.append(candidate)
    for member in group:
        with contextlib.suppress(psutil.Error):
            member.terminate()
    _, alive = psutil.wait_procs(group, timeout=STOP_TIMEOUT_SECONDS)
    for member in alive:
        with contextlib.suppress(psutil.Error):
            member.kill()


@contextlib.contextmanager
def samba_server(root: Path) -> Iterator[SambaServer]:
    """Run smbd exporting ``root`` as ``\\\\127.0.0.1\\optimizer`` until the block ends.

    Args:
        root: The folder to export (created if missing).
    """
    smbd = find_samba_tool("smbd")
    pdbedit = find_samba_tool("pdbedit")
    root.mkdir(parents=True, exist_ok=True)
    account = pwd.getpwuid(os.geteuid()).pw_name
    password = secrets.token_urlsafe(12)
    # Short, private folder: smbd's unix sockets must fit in 108 bytes, pytest paths may not.
    folder = Path(tempfile.mkdtemp(prefix="smbd-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        port = _free_port()
        options = _share_options(root)
        share = "\n".join(f"   {name} = {value}" for name, value in options.items())
        conf = folder / "smb.conf"
        conf.write_text(f"{_global_section(folder, port)}\n[{SHARE_NAME}]\n{share}\n")
        (folder / "users.map").write_text(f"{account} = {ANALYST}\n")
        _add_smb_account(pdbedit, conf, account, password)
        log_path = folder / "smbd.out"
        with log_path.open("wb") as out:
            # smbd listens only with stdin detached. Its own session: on exit smbd signals its
            # whole process group, which must not be pytest's.
            proc = subprocess.Popen([smbd, "-F", "--no-process-group", "-s", str(conf)],
                                    stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        _wait_listening(proc, port, folder / "log.smbd")
        yield SambaServer(host=LOOPBACK, port=port, share=SHARE_NAME, root=root,
                          username=ANALYST, password=password, pid=proc.pid,
                          log_path=folder / "log.smbd", share_options=options)
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(folder, ignore_errors=True)


class SmbClient:
    """What an analyst's Windows machine does to the share, over SMB.

    Args:
        server: The server to talk to.
        username: SMB login (the server's analyst by default).
        password: Its password (the server's by default).
    """

    def __init__(self, server: SambaServer, *, username: str | None = None,
                 password: str | None = None) -> None:
        self.server = server
        self._cache: dict[str, Any] = {}
        self._auth = {"port": server.port, "username": username or server.username,
                      "password": server.password if password is None else password,
                      "connection_cache": self._cache}

    def path(self, relative: str) -> str:
        return self.server.unc(relative)

    def write_bytes(self, relative: str, data: bytes) -> None:
        """Create (or overwrite) a file in one go, as a drag-and-drop of a small file does."""
        self.write_in_pieces(relative, [data])

    def write_in_pieces(self, relative: str, pieces: Sequence[bytes], *,
                        pause_seconds: float = 0.0,
                        while_paused: Callable[[], object] | None = None,
                        preallocate: bool = False) -> None:
        """Open a file, write ``pieces`` front to back with a pause after each but the last,
        then close it: a slow upload, or a program writing its file in parts.

        Args:
            relative: Path inside the share.
            pieces: The content, in the order it is written.
            pause_seconds: The client's stall after each piece but the last.
            while_paused: Called repeatedly during each stall (the test's checks).
            preallocate: Set the file to its full size before writing, as Windows Explorer's
                copy does (the server sees a full-size file of zeros that fills up).
        """
        total = sum(len(piece) for piece in pieces)
        with smbclient.open_file(self.path(relative), mode="wb", buffering=0,
                                 **self._auth) as handle:
            if preallocate:
                handle.truncate(total)
            for number, piece in enumerate(pieces, start=1):
                view = memoryview(piece)
                while view:
                    written = handle.write(view)
                    view = view[written:]
                if number < len(pieces):
                    _stall(pause_seconds, while_paused)

    def set_mtime(self, relative: str, mtime_seconds: float) -> None:
        """Set the last-write time, as a Windows copy does after writing (the source's time)."""
        smbclient.utime(self.path(relative), times=(mtime_seconds, mtime_seconds), **self._auth)

    def read_bytes(self, relative: str) -> bytes:
        with smbclient.open_file(self.path(relative), mode="rb", **self._auth) as handle:
            data: bytes = handle.read()
            return data

    def read_json(self, relative: str) -> Any:
        """The parsed file, or None while it does not exist."""
        try:
            return json.loads(self.read_bytes(relative))
        except OSError as exc:  # smbprotocol's SMBOSError is not a FileNotFoundError
            if exc.errno == errno.ENOENT:
                return None
            raise

    def wait_for_json(self, relative: str, *, timeout: float) -> Any:
        """Poll a file over SMB until it exists, as a client waiting for its result does."""
        return wait_for(lambda: self.read_json(relative), timeout=timeout, interval=0.2,
                        message=f"{relative} over SMB")

    def listdir(self, relative: str = "") -> list[str]:
        names: list[str] = smbclient.listdir(self.path(relative), **self._auth)
        return sorted(names)

    def rename(self, source: str, target: str) -> None:
        smbclient.rename(self.path(source), self.path(target), **self._auth)

    def close(self) -> None:
        """Log off and close every connection (and its receiver thread)."""
        smbclient.reset_connection_cache(connection_cache=self._cache)

    def __enter__(self) -> SmbClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stall(seconds: float, while_paused: Callable[[], object] | None) -> None:
    """A client that stops writing for ``seconds``; the test keeps checking meanwhile."""
    deadline = time.monotonic() + seconds
    while True:
        if while_paused is not None:
            while_paused()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        time.sleep(min(0.05, remaining))
