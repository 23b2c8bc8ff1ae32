"""One run per output folder: a lock file in `outdir` naming the run that holds it."""

from __future__ import annotations

import datetime
import json
import os
import socket
from pathlib import Path

from textvision.core.errors import InputError

LOCK_NAME = ".textvision.lock"


def _me() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "cwd": os.getcwd()}


def _holder(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable or half-written: treated as held by an unknown run


def _dead(holder: dict) -> bool:
    """Whether the holder surely no longer runs: a process of this host that is gone."""
    if holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except (KeyError, ValueError, ProcessLookupError):
        return True
    except PermissionError:
        return False
    return False


def acquire_outdir(outdir: str | Path) -> Path:
    """Take `outdir`'s lock for this process; clear a lock whose holder died on this host; refuse
    one held by a live run (or a run on another host), naming it."""
    outdir = Path(outdir).resolve()
    path = outdir / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {**_me(), "started": datetime.datetime.now().isoformat(timespec="seconds")}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if holder is None:
                continue  # released meanwhile
            if {k: holder.get(k) for k in ("host", "pid")} == {k: me[k] for k in ("host", "pid")}:
                return path
            if not _dead(holder):
                raise InputError(_held_message(outdir, path, holder)) from None
            path.unlink(missing_ok=True)  # its holder died: stale
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        return path
    raise InputError(f"{path}: could not take the lock of {outdir} (it keeps changing hands)")


def _held_message(outdir, path: Path, holder: dict) -> str:
    who = (
        f"snakemake pid {holder.get('pid')} on host {holder.get('host')} (started "
        f"{holder.get('started')}, working directory {holder.get('cwd')})"
        if holder
        else "an unknown run"
    )
    return (
        f"outdir {outdir} is in use by another run: {who}. Wait for it to finish; if that run is "
        f"gone (its host died), delete {path}"
    )


def release_outdir(outdir: str | Path) -> None:
    """Remove `outdir`'s lock if this process holds it."""
    path = Path(outdir) / LOCK_NAME
    holder = _holder(path)
    if holder and holder.get("host") == socket.gethostname() and holder.get("pid") == os.getpid():
        path.unlink(missing_ok=True)
