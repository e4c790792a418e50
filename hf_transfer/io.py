"""Atomic file writes: a killed run never leaves a half-written file that looks whole."""

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as tmp:
        tmp.write(data)
        tmp.flush()
        # mkstemp makes 0600 files; give the permissions a plain open() would, so teammates can read the model.
        os.fchmod(tmp.fileno(), 0o666 & ~_umask())
        os.fsync(tmp.fileno())
    os.replace(tmp.name, path)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def follow_umask(folder: str | Path) -> None:
    """Give everything under `folder` the permissions a plain open() or mkdir() would: safetensors and mkstemp
    write 0600 files, which teammates could not read."""
    mask = _umask()
    for path in Path(folder).rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def atomic_save_files(directory: str | Path, save: Callable[[Path], None]) -> list[str]:
    """Let `save` write into a scratch folder, then move each file into `directory` in one rename.

    Returns the names of the files moved (top level only; `save_pretrained` writes flat folders).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=directory, prefix=".partial-"))
    try:
        save(scratch)
        follow_umask(scratch)
        names = sorted(p.name for p in scratch.iterdir())
        for name in names:
            target = directory / name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(scratch / name, target)
        return names
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
