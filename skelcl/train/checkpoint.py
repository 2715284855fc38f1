"""Checkpoints written atomically and verified on load.

File layout: MAGIC (8 bytes) | sha256 of the payload (32 bytes) | payload (a torch.save of the state).
save() writes a temporary file in the same directory, fsyncs it and os.replace()s it over the target, so
a crash leaves either the old or the new file, never a half-written one. load() checks the magic, the
length and the digest before unpickling: a truncated or altered file raises SkelclError, never loads.
Checkpoints are pickles of our own runs (torch.load with weights_only=False): load only files you trust.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

import torch

from skelcl.errors import SkelclError

MAGIC = b"SKELCK01"


def save(path, state: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC)
            f.write(hashlib.sha256(payload).digest())
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load(path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise SkelclError(f"checkpoint {path} does not exist")
    data = path.read_bytes()
    if len(data) < len(MAGIC) + 32 or data[: len(MAGIC)] != MAGIC:
        raise SkelclError(
            f"checkpoint {path} is not a skelcl checkpoint (bad header; truncated or foreign file)"
        )
    digest, payload = data[len(MAGIC) : len(MAGIC) + 32], data[len(MAGIC) + 32 :]
    if hashlib.sha256(payload).digest() != digest:
        raise SkelclError(
            f"checkpoint {path} is corrupt: its content does not match its checksum ({len(data)} bytes; "
            "truncated or modified)"
        )
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a corrupt file to the user
        raise SkelclError(f"checkpoint {path} could not be read: {err}") from None
