"""One run at a time in an output folder: a lock file that names the process holding it.

A run's main process creates `LOCK` in `--output_dir` before it reads any data and removes it when the run ends,
however it ends, so a second run into the same folder fails at once instead of deleting or mixing the first one's
files. A lock whose process is gone (killed, out of memory) is stale and is taken over. A lock held on another
machine can't be checked: it is refused, with the file to delete.
"""

import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from hf_transfer.config import UsageError

LOCK = ".hf_transfer_run.lock"


def check_writable(folder: Path) -> None:
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise UsageError(f"--output_dir {folder}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--output_dir {folder}: no permission to write in {existing}")


def _this_process() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname()}


def _holder(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:  # never whole: the lock is linked into place with its contents written
        return {}


def _is_stale(holder: dict) -> bool:
    """The holder ran on this machine and its process has ended."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, run by another user
        return False
    return False


def _take(folder: Path) -> str | None:
    """Take the lock; returns why not, or None."""
    path = folder / LOCK
    me = {**_this_process(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    # Written whole under a scratch name, then linked: a second run never reads a half-written lock.
    with tempfile.NamedTemporaryFile("w", dir=folder, prefix=f".{LOCK}.", suffix=".tmp", delete=False) as scratch:
        json.dump(me, scratch)
    try:
        for _ in range(2):
            try:
                os.link(scratch.name, path)
                return None
            except FileExistsError:
                holder = _holder(path)
                if holder is None or holder == {} or _is_stale(holder):
                    path.unlink(missing_ok=True)  # its run was killed: take it over
                    continue
                return (f"--output_dir {folder} is in use: another run (process {holder.get('pid')} on "
                        f"{holder.get('host')}, started {holder.get('started')}) is writing to it. Wait for it to "
                        f"end or choose another --output_dir; if no run is writing there, delete {path}")
        return f"--output_dir {folder}: could not take its lock {path}"
    finally:
        os.unlink(scratch.name)


def _release(folder: Path) -> None:
    path = folder / LOCK
    holder = _holder(path)
    if holder and {k: holder.get(k) for k in ("pid", "host")} == _this_process():
        path.unlink()


@contextmanager
def output_dir_lock(accelerator: Accelerator, output_dir: str | Path) -> Iterator[None]:
    """Hold `output_dir`'s lock for the run inside the block. Under DDP the main process holds it for all; the
    others learn from it whether it could."""
    folder = Path(output_dir)
    check_writable(folder)  # every process sees the same folder: all raise, or none
    created = not folder.exists()
    refusal = None
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        refusal = _take(folder)
    if accelerator.num_processes > 1:
        refusal = broadcast_object_list([refusal], from_process=0)[0]
    if refusal:
        raise UsageError(refusal)
    try:
        yield
    finally:
        if accelerator.is_main_process:
            _release(folder)
            if created and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()  # the run stopped before it wrote anything: leave no empty folder behind
