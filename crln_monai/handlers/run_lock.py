"""A lock file that makes one training run the owner of its checkpoint folder while it trains.

Ignite's ``Checkpoint``/``DiskSaver`` and MONAI's ``CheckpointSaver`` write into a folder without asking whether
another process writes there too, and neither has a notion of a run owning its outputs: two trainings started
into one ``bundle_root`` both run to the end, the later one overwriting the earlier one's checkpoints, history
and export. This module is the small piece they lack: ``<folder>/run.lock``, created with ``O_CREAT | O_EXCL``
(atomic on local file systems and on NFS v3+), holding one JSON line that names its holder: the process id, the
host, the start time and the command line. ``fcntl.flock`` would free the lock by itself when its holder dies,
but it is advisory per open file, not visible to a user (``cat run.lock`` names the holder here) and unreliable
on some network file systems; a lock left behind by a killed run is recognised instead (its process no longer
alive on this host) and taken over, saying so in the log.

A lock of another host cannot be checked from here: it is respected, and the message says which file to delete
when that run is known to be dead.
"""

from __future__ import annotations

import atexit
import datetime
import json
import logging
import os
import secrets
import shlex
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["LOCK_NAME", "RunLock", "RunLockedError", "lock_holder", "process_alive"]

logger = logging.getLogger(__name__)

LOCK_NAME = "run.lock"
"""The lock file's name inside the folder it guards."""

_HELD: dict[str, str] = {}
"""Lock files held by this process (path -> token), to tell a live lock of ours from one this pid left earlier."""

_COMMAND_SHOWN = 200  # characters of the holder's command line shown in a message


class RunLockedError(RuntimeError):
    """The folder is held by another live training run; the message is one line naming the holder."""


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (``os.kill(pid, 0)``; a process of another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22), else ``None``.

    Recorded in the lock so that a process id reused after a kill (common in containers, where a restarted job
    often gets the same small pid) is not taken for the holder.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # the command name in parentheses may hold spaces
    return fields[19] if len(fields) > 19 else None


def lock_holder(path: str | os.PathLike) -> dict[str, Any] | None:
    """The holder recorded in a lock file (``pid``, ``host``, ``started``, ``command``, ...), ``None`` if absent.

    A file that is not such a record (empty, half-written, edited) gives ``{"unreadable": "<reason>"}``.
    """
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        return {"unreadable": e.strerror or str(e)}
    try:
        holder = json.loads(text)
    except ValueError:
        return {"unreadable": "not a lock record"}
    if not isinstance(holder, Mapping) or not isinstance(holder.get("pid"), int):
        return {"unreadable": "not a lock record"}
    return dict(holder)


def _describe(holder: Mapping[str, Any]) -> str:
    if "unreadable" in holder:
        return f"an unreadable lock ({holder['unreadable']})"
    command = " ".join(str(holder.get("command", "?")).split())
    if len(command) > _COMMAND_SHOWN:
        command = command[: _COMMAND_SHOWN - 3] + "..."
    return (
        f"pid {holder['pid']} on host {holder.get('host', '?')}, started {holder.get('started', '?')}, "
        f"command: {command}"
    )


class RunLock:
    """``<folder>/run.lock``, held by one process at a time (see the module docstring).

    Args:
        folder: the folder the lock guards (the run's ``ckpt_dir``); created at :meth:`acquire` if missing.
        name: the lock file's name.
    """

    def __init__(self, folder: str | os.PathLike, name: str = LOCK_NAME) -> None:
        self.path = Path(folder) / name
        self._token: str | None = None
        self._pid = os.getpid()  # the process that took it (a forked data-loader worker never releases it)

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._token is not None

    def stale(self, holder: Mapping[str, Any]) -> bool:
        """Whether ``holder`` (a :func:`lock_holder` record) is a run that is no longer alive.

        True when it ran on this host and its process is gone, or its pid now belongs to a process started at
        another time (a reused pid), or it is this very process without holding the lock (left by an earlier run
        of this process, or a reused pid). A lock of another host or an unreadable one is never stale: it cannot
        be checked.
        """
        if "unreadable" in holder or holder.get("host") != socket.gethostname():
            return False
        pid = int(holder["pid"])
        if pid == os.getpid():
            token = holder.get("token")
            return token is None or _HELD.get(str(self.path)) != token
        if not process_alive(pid):
            return True
        recorded, current = holder.get("pid_start"), _process_start(pid)
        return recorded is not None and current is not None and recorded != current

    def refusal(self, holder: Mapping[str, Any]) -> str:
        """The one-line message refusing a second run while ``holder`` holds the lock."""
        return (
            f"training folder {self.path.parent} is in use by another training run ({_describe(holder)}); wait for "
            f"it to end or train into another --bundle_root; if that run is no longer alive, delete {self.path}."
        )

    def check(self) -> dict[str, Any] | None:
        """Refuse now if a live run holds the lock, without taking it; returns the stale holder to be taken over
        at :meth:`acquire` (``None`` when the folder is free).

        Raises:
            RunLockedError: another live run holds the lock (the message names it).
        """
        holder = lock_holder(self.path)
        if holder is None or (self.held and holder.get("token") == self._token):
            return None
        if not self.stale(holder):
            raise RunLockedError(self.refusal(holder))
        return holder

    def _record(self) -> dict[str, Any]:
        pid = os.getpid()
        return {
            "pid": pid,
            "host": socket.gethostname(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": shlex.join([os.path.basename(sys.executable), *sys.argv]) if sys.argv else "python",
            "pid_start": _process_start(pid),
            "token": secrets.token_hex(8),
        }

    def acquire(self) -> None:
        """Create the lock file atomically (``O_CREAT | O_EXCL``); take over a stale one (logged as a warning).

        Raises:
            RunLockedError: another live run holds the lock.
        """
        if self.held:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = self._record()
        text = json.dumps(record) + "\n"
        for _ in range(10):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                self._take_over_stale()
                continue
            with os.fdopen(fd, "w") as f:
                f.write(text)
            self._token, self._pid = record["token"], record["pid"]
            _HELD[str(self.path)] = self._token
            atexit.register(self.release)
            logger.info(f"{self.path}: this run holds the training folder until it ends")
            return
        raise RunLockedError(f"could not take the lock {self.path}: it was recreated 10 times while taking it over.")

    def _take_over_stale(self) -> None:
        """Move a stale lock out of the way (a rename, so two runs taking it over at once cannot both succeed)."""
        holder = self.check()
        if holder is None:
            return  # released meanwhile: try again
        aside = self.path.with_name(f".{self.path.name}.stale-{secrets.token_hex(4)}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # another run moved it first
        moved = lock_holder(aside)
        if moved is not None and moved.get("token") != holder.get("token") and not self.stale(moved):
            try:  # a live run took the lock between our read and the rename: give it back
                os.link(aside, self.path)
            except FileExistsError:
                pass
            os.unlink(aside)
            raise RunLockedError(self.refusal(moved))
        os.unlink(aside)
        logger.warning(f"{self.path}: taking over the lock of a run that is no longer alive ({_describe(holder)})")

    def release(self) -> None:
        """Delete the lock file if this object holds it (a lock of another run is never touched); idempotent."""
        if self._token is None or os.getpid() != self._pid:
            return
        token, self._token = self._token, None
        _HELD.pop(str(self.path), None)
        atexit.unregister(self.release)
        holder = lock_holder(self.path)
        if holder is not None and holder.get("token") == token:
            self.path.unlink(missing_ok=True)
            logger.info(f"{self.path}: released")
