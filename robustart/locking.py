"""One process at a time per run folder: an OS file lock on ``<run>/.lock``.

Two processes that start the same run (a requeued Slurm job while the old one still runs, two sweeps over one
grid) would otherwise evaluate it together and collide when one merges and deletes ``parts/``. So the process that
evaluates a run holds :func:`fcntl.flock` on ``<run>/.lock`` from just after the "skip if done" check until its
tables and ``done`` are written, and writes its pid, host name and start time into the file. Another process that
finds the lock held either waits for it (``evaluation.if_locked=wait``, the default; ``if_locked="wait"`` of
:func:`robustart.evaluate`), then checks ``done`` again: it skips the run if the holder finished it, and resumes from
the committed parts (:mod:`robustart.parts`) if the holder died. Or it exits with status 2 naming the holder
(``exit``): ``run <id> is being evaluated by process <pid> on <host> since <time>``.

- **A dead holder never blocks.** The kernel releases a flock when the process holding it ends, however it ends
  (SIGKILL, out of memory, a node reboot of the holder's own host): no pid checks, no time-outs. Children forked
  while the lock is held (data-loader workers) close their copy of the file at once (:func:`os.register_at_fork`),
  so that they cannot hold it for a killed parent.
- **The file.** The holder deletes ``.lock`` when it lets go; a taker checks that the file it locked is still the
  one at the path (same inode), else it starts over, so a deleted file is never locked by mistake. A killed holder
  leaves the file with its old content, which the next taker overwrites.
- **Several processes of one run** (torchrun, a Slurm step with several tasks; ``world > 1``): only rank 0 takes
  the lock, right after the process group is joined, and hands what it found (go on; finished meanwhile; held
  elsewhere, exit) to the other ranks through the gloo group that waits for days
  (:func:`robustart.training.distributed.share`). The other ranks never touch the lock, so rank 0 holding it cannot
  block them at their barriers; while rank 0 waits for another launch of the run, they wait in that hand-over,
  not in a collective that times out.
- **Filesystems.** A run folder on a filesystem without flock (some NFS or Lustre mounts) is run unlocked, with a
  warning, as before this lock existed; on a shared filesystem that does support it (NFS v4, Lustre mounted with
  ``flock``) the lock holds across nodes.

This module imports neither PyTorch nor pandas: the command line takes the lock before any heavy import.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from datetime import datetime
from pathlib import Path

from robustart.errors import UserError

log = logging.getLogger("robustart")

LOCK_FILE = ".lock"
#: what ``evaluation.if_locked`` (and ``if_locked=`` of :func:`robustart.evaluate`) takes
IF_LOCKED = ("wait", "exit")

_held: set[int] = set()  # descriptors of the locks this process holds, closed in forked children


def _close_in_child() -> None:
    for fd in list(_held):
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)


class RunLocked(UserError):
    """Another process evaluates the run and ``if_locked`` is ``exit``; the message names it."""


def check_if_locked(value, option: str = "evaluation.if_locked") -> str:
    """``value`` if it is one of :data:`IF_LOCKED`, else a :class:`UserError` naming the valid ones."""
    if value not in IF_LOCKED:
        raise UserError(f"{option}={value!r} is not valid; choose one of: {', '.join(IF_LOCKED)}")
    return value


def holder_text(content: bytes | str) -> str | None:
    """``process <pid> on <host> since <time>`` from a lock file's content; ``None`` while it is unreadable."""
    try:
        info = json.loads(content)
        return f"process {info['pid']} on {info['host']} since {info['since']}"
    except (ValueError, TypeError, KeyError):
        return None


def read_holder(run_dir: Path | str) -> str | None:
    """Who the lock file of ``run_dir`` names (whether or not it is still held); ``None`` without one."""
    try:
        return holder_text((Path(run_dir) / LOCK_FILE).read_bytes())
    except OSError:
        return None


class RunLock:
    """A held run lock; :meth:`release` (or leaving its ``with`` block) lets go and deletes the file."""

    def __init__(self, path: Path, fd: int | None):
        self.path, self._fd = path, fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        _held.discard(fd)
        try:
            if _same_file(fd, self.path):
                self.path.unlink()  # while still held: a waiter then finds its file gone and starts over
                # a run that failed before any work (a user error found while planning) leaves no empty folder
                self.path.parent.rmdir()
        except OSError:  # the folder holds the run's files (or a waiter's new lock): it stays
            pass
        finally:
            os.close(fd)  # lets go of the lock

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(run_dir: Path | str, run_id: str, if_locked: str = "wait") -> RunLock:
    """Lock ``run_dir`` (created if needed) for this process. If another process holds it: wait for it, logging once
    who it is (``wait``), or raise :class:`RunLocked` naming it (``exit``)."""
    check_if_locked(if_locked)
    run_dir = Path(run_dir)
    path = run_dir / LOCK_FILE
    told = False
    while True:
        run_dir.mkdir(parents=True, exist_ok=True)  # again after a holder that failed early removed its folder
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                message = f"run {run_id} is being evaluated by {_holder(fd)}"
                if if_locked == "exit":
                    raise RunLocked(message) from None
                if not told:
                    log.info("%s; waiting", message)
                    told = True
                fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                log.warning("cannot lock %s (%s): the filesystem does not support flock; running unlocked",
                            path, err.strerror)  # fmt: skip
                return RunLock(path, None)
            raise
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):
            _held.add(fd)
            _write_holder(fd)
            return RunLock(path, fd)
        os.close(fd)  # the holder deleted the file as it let go: lock the one at the path now


def _same_file(fd: int, path: Path) -> bool:
    try:
        mine, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino)


def _holder(fd: int, patience: float = 2.0) -> str:
    """Who holds the lock of ``fd``: the file is written just after it is locked, so a fresh one may be empty."""
    deadline = time.monotonic() + patience
    while True:
        text = holder_text(os.pread(fd, 4096, 0))
        if text is not None or time.monotonic() > deadline:
            return text or "process ? on ? since ? (its lock file is unreadable)"
        time.sleep(0.02)


def _write_holder(fd: int) -> None:
    since = datetime.now().astimezone().isoformat(timespec="seconds")
    content = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, content, 0)
