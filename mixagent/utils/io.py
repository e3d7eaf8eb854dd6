"""Atomic output and content hashing.

Outputs are written to a temporary sibling and renamed into place, so a crash, a kill or a
validation error never leaves a half-written file or directory where a finished one is expected.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

logger = logging.getLogger(__name__)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Stream a file through sha256 (memory stays flat for any file size)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hash a JSON-serialisable object canonically (sorted keys, no whitespace)."""
    payload = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


@contextlib.contextmanager
def atomic_text_file(path: str | Path) -> Iterator[TextIO]:
    """A text file that appears at ``path`` whole or not at all (temporary file, fsync, rename):
    a reader never sees a half-written card, manifest or benchmark, even after a kill."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private (0600); outputs are shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    """Write JSON to ``path`` via a temporary file and an atomic rename."""
    with atomic_text_file(path) as f:
        json.dump(obj, f, indent=indent, sort_keys=False)
        f.write("\n")


# -- atomic directories ------------------------------------------------------------------------
# A temporary directory's name records its owner (host and pid), so that a later writer of the same
# output can tell the leftover of a killed build (owner gone: remove it) from a build running right
# now in another process (owner alive: leave it alone). The pid is checked only on the same host.
_TMP_KINDS = ("building", "old")
_OWNER_RE = re.compile(r"^(?P<host>[A-Za-z0-9._-]+)-(?P<pid>\d+)-[a-z0-9_]+$")


def _hostname() -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", socket.gethostname()) or "localhost"


def _owner_tag() -> str:
    return f"{_hostname()}-{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _stale_owner(tail: str) -> bool | None:
    """True if the owner recorded in a temp name is gone, False if alive, None if unknown.

    Unknown (a name from an older mixagent without an owner, or another host's build on a shared
    file system) is never treated as stale: removing a running build's work would be worse than
    leaving a folder behind.
    """
    m = _OWNER_RE.match(tail)
    if m is None or m["host"] != _hostname():
        return None
    pid = int(m["pid"])
    return pid != os.getpid() and not _pid_alive(pid)


def remove_stale_temporaries(final: str | Path) -> list[Path]:
    """Clean up what killed writers of ``final`` left beside it; returns the paths removed.

    A ``.NAME.building-HOST-PID-XXXX`` folder whose process is gone was never finished, so it is
    removed. A ``.NAME.old-HOST-PID-XXXX`` folder is the previous output, moved aside just before
    the new one was renamed into place: if ``final`` is missing the writer died in between and the
    old output is put back (never lose data), otherwise it is removed. Folders of live processes,
    of other hosts and of older mixagent versions (no owner in the name) are left alone.
    """
    final = Path(final)
    removed: list[Path] = []
    if not final.parent.is_dir():
        return removed
    for kind in _TMP_KINDS:
        prefix = f".{final.name}.{kind}-"
        for p in sorted(final.parent.glob(glob.escape(prefix) + "*")):
            if not p.is_dir() or p.is_symlink() or _stale_owner(p.name[len(prefix):]) is not True:
                continue
            if kind == "old" and not final.exists():
                try:
                    os.rename(p, final)
                except OSError as err:
                    logger.warning("could not restore %s from %s (%s)", final, p, err)
                else:
                    logger.warning("restored %s from %s, left by a killed writer", final, p)
                continue
            shutil.rmtree(p, ignore_errors=True)
            if not p.exists():
                logger.warning("removed %s, left by a killed writer of %s (process gone)", p, final)
                removed.append(p)
    return removed


@contextlib.contextmanager
def atomic_directory(final: str | Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``final`` only if the block succeeds.

    On any exception the temporary directory is removed and ``final`` is untouched. With
    ``replace=True`` an existing ``final`` is swapped out (the old one is removed only after the
    new one is in place, so there is no moment where neither exists with valid content). A kill
    (SIGKILL, OOM, power) can still leave the temporary directory behind: its name records the
    owner, and the next writer of ``final`` removes it (:func:`remove_stale_temporaries`).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
    owner = _owner_tag()
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.building-{owner}-", dir=final.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private (0700); outputs are read by other processes
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        if not replace:
            shutil.rmtree(tmp, ignore_errors=True)
            raise FileExistsError(f"{final} already exists")
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-{owner}-", dir=final.parent))
        os.replace(final, old)  # replaces the empty placeholder
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if missing), so that concurrent processes
    — Ray workers, several CLI runs — build a cached artifact once instead of racing to write it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


class LockHeld(Exception):
    """:func:`exclusive_lock` found the lock held; ``holder`` is what its owner wrote in it."""

    def __init__(self, path: Path, holder: str):
        super().__init__(f"{path} is locked by {holder or 'another process'}")
        self.path = path
        self.holder = holder


@contextlib.contextmanager
def exclusive_lock(path: str | Path) -> Iterator[None]:
    """Take an exclusive advisory lock on ``path`` at once, or raise :class:`LockHeld`.

    Unlike :func:`file_lock` this never waits: it is for "only one writer of this folder at a
    time", where the second writer should be told, not queued. The holder writes
    ``host pid`` into the file for that message. The kernel drops the lock when its process dies
    (even by SIGKILL), so a crashed run never blocks the next one. The file is removed on release;
    a process that opened it just before is caught by the inode check and retries on a new file,
    so removal cannot let two holders in.
    """
    path = Path(path)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            finally:
                os.close(fd)
            raise LockHeld(path, holder) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            st, cur = os.fstat(fd), os.stat(path)
            same = (st.st_dev, st.st_ino) == (cur.st_dev, cur.st_ino)
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # its previous holder removed the file before we locked it: take the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{_hostname()} {os.getpid()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)
