"""Read CTranslate2's `model.bin`: a flat little-endian list of named tensors.

Layout (binary version 6): version (uint32), spec name (string), spec revision (uint32), variable count (uint32);
per variable: name (string), rank (uint8), shape (uint32 each), dtype code (uint8), byte count (uint32), the bytes;
then alias count (uint32) and per alias its name and the variable it stands for (two strings). A string is its byte
count (uint16, the trailing NUL included) then the bytes.
"""

import struct
from pathlib import Path

import torch

from hf_transfer.config import UsageError

SUPPORTED_VERSIONS = (6,)
DTYPES = {0: torch.float32, 1: torch.int8, 2: torch.int16, 3: torch.int32, 4: torch.float16, 5: torch.bfloat16}


class _Reader:
    def __init__(self, data: bytearray, source: str):
        self.data, self.offset, self.source = data, 0, source

    def unpack(self, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.offset + size > len(self.data):
            raise UsageError(f"{self.source}: truncated CTranslate2 file (ends at byte {len(self.data):,})")
        values = struct.unpack_from(fmt, self.data, self.offset)
        self.offset += size
        return values

    def string(self) -> str:
        (length,) = self.unpack("<H")
        return bytes(self.unpack(f"<{length}s")[0]).rstrip(b"\0").decode()

    def tensor(self, dtype: torch.dtype, shape: tuple[int, ...], size: int) -> torch.Tensor:
        if self.offset + size > len(self.data):
            raise UsageError(f"{self.source}: truncated CTranslate2 file (ends at byte {len(self.data):,})")
        flat = torch.frombuffer(self.data, dtype=dtype, count=size // dtype.itemsize, offset=self.offset)
        self.offset += size
        return flat.reshape(shape)


def read_model_bin(parts: list[Path]) -> tuple[str, dict[str, torch.Tensor]]:
    """(spec name, {variable name: tensor}) of a `model.bin`, given as one file or as parts to concatenate in order.

    Aliases (a tied output projection, say) map to the same tensor as the variable they name.
    """
    source = " + ".join(str(p) for p in parts)
    data = bytearray()
    for part in parts:
        data += part.read_bytes()
    reader = _Reader(data, source)
    (version,) = reader.unpack("<I")
    if version not in SUPPORTED_VERSIONS:
        raise UsageError(f"{source}: CTranslate2 binary version {version}; this reader knows "
                         f"{', '.join(map(str, SUPPORTED_VERSIONS))}")
    spec = reader.string()
    reader.unpack("<I")  # spec revision: the variables' names say all the conversion needs
    (count,) = reader.unpack("<I")
    variables = {}
    for _ in range(count):
        name = reader.string()
        (rank,) = reader.unpack("<B")
        shape = reader.unpack(f"<{rank}I")
        code, size = reader.unpack("<BI")
        if code not in DTYPES:
            raise UsageError(f"{source}: variable {name} has unknown dtype code {code}")
        variables[name] = reader.tensor(DTYPES[code], shape, size)
    (aliases,) = reader.unpack("<I")
    for _ in range(aliases):
        alias, target = reader.string(), reader.string()
        variables[alias] = variables[target]
    return spec, variables
