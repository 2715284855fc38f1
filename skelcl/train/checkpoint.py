"""Checkpoints written atomically and verified on load.

File layout: MAGIC (8 bytes) | sha256 of the payload (32 bytes) | payload (a torch.save of the state).
save() writes a temporary file in the same directory, fsyncs it and os.replace()s it over the target, so
a crash leaves either the old or the new file, never a half-written one. load() checks the magic, the
length and the digest before unpickling: a truncated or altered file raises SkelclError, never loads.
Checkpoints are pickles of our own runs (torch.load with weights_only=False): load only files you trust.
Files get the usual mode for new files (0666 minus the umask, typically 0644), not mkstemp's 0600.

A run directory holds last.pt (latest epoch), best.pt (fine-tuning: best validation avg mAP) and
epoch_N.pt (every train.keep_every epochs). load_checkpoint(RUN or FILE, which="last" | "best" | N) opens
one; export_encoder() writes the encoder as a plain state dict that torch.load(weights_only=True) reads.
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


def file_mode() -> int:
    """0666 minus the process umask: the mode open() gives a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_bytes_atomic(path, chunks) -> Path:
    """Write the byte strings `chunks` to path via a fsynced temporary file and os.replace (mode:
    file_mode()). An OSError (disk full, file-size limit, folder not writable) raises SkelclError and
    leaves the previous file as it was."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            for c in chunks:
                f.write(c)
            f.flush()
            os.fchmod(f.fileno(), file_mode())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError):  # disk full, file-size limit, folder not writable
            kept = "; the previous file there is intact" if path.is_file() else ""
            raise SkelclError(f"could not write {path}: {err.strerror or err}{kept}") from None
        raise
    return path


def save(path, state: dict, copies=()) -> Path:
    """Write state to path (and the same bytes to each path in `copies`), each atomically."""
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    digest = hashlib.sha256(payload).digest()
    for p in (path, *copies):
        write_bytes_atomic(p, (MAGIC, digest, payload))
    return Path(path)


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


def checkpoint_file(path, which="last") -> Path:
    """The checkpoint file for a run directory and `which` ("last", "best", or an epoch number for
    epoch_N.pt); a file path is returned as it is."""
    p = Path(path)
    if not p.is_dir():
        return p
    name = f"epoch_{int(which)}.pt" if str(which).isdigit() else f"{which}.pt"
    if name not in ("last.pt", "best.pt") and not name.startswith("epoch_"):
        raise SkelclError(f"which checkpoint: 'last', 'best' or an epoch number, got {which!r}")
    f = p / name
    if not f.is_file():
        have = sorted(x.name for x in p.glob("*.pt"))
        raise SkelclError(f"{p}: no {name} (checkpoints there: {', '.join(have) or 'none'})")
    return f


def load_checkpoint(path, which="last", map_location="cpu") -> dict:
    """A run's checkpoint as a dict: from a run directory (which: "last", "best" or an epoch number) or a
    .pt file. Keys: kind ("pretrain" | "localizer"), config (the run's resolved config), epoch, model
    (state dict of the whole model: MoCo with both encoders and queues, or the localizer), optimizer,
    scheduler, history (one dict per epoch), rng; localizer checkpoints also backbone (Backbone kwargs),
    head, num_outputs, classes, bodies. Raises SkelclError for a missing, truncated or altered file."""
    return load(checkpoint_file(path, which), map_location=map_location)


def encoder_state(st: dict) -> tuple[dict, dict]:
    """(Backbone kwargs, backbone state dict) of a loaded checkpoint: the query encoder of a pretraining
    checkpoint, the (fine-tuned) backbone of a localizer checkpoint."""
    kind = st.get("kind")
    if kind == "pretrain":
        m = st["config"]["model"]
        bcfg = {"kind": m["backbone"], "width": float(m["width"]), "strides": tuple(m["strides"])}
        prefix = "encoder_q."
    elif kind == "localizer":
        bcfg, prefix = dict(st["backbone"]), "backbone."
    else:
        raise SkelclError(f"not a skelcl run checkpoint (kind {kind!r})")
    state = {k[len(prefix) :]: v for k, v in st["model"].items() if k.startswith(prefix)}
    return bcfg, state


def export_encoder(path, out, which="last") -> tuple[Path, Path]:
    """Write the encoder of a run (directory or .pt file) as a plain state dict to `out` (torch.save of
    {name: tensor}; torch.load(out, weights_only=True) opens it) and, beside it with suffix .json, the
    Backbone kwargs ("backbone"), the source checkpoint and its epoch. To rebuild the encoder:
    Backbone(**info["backbone"]).load_state_dict(torch.load(out, weights_only=True)).
    Returns (state dict file, json file)."""
    import json

    src = checkpoint_file(path, which)
    out = Path(out)
    side = out.with_suffix(".json")
    for p in (out, side):
        if p.is_dir():
            example = out / "encoder.pt"
            raise SkelclError(f"--out {out}: {p} is a folder; give a file name, e.g. --out {example}")
    if out == side:
        raise SkelclError(f"--out {out}: the settings go to OUT with suffix .json; give e.g. encoder.pt")
    if out.resolve() == src.resolve():
        raise SkelclError(f"--out {out} is the checkpoint being exported; give another file name")
    st = load(src)
    bcfg, state = encoder_state(st)
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in state.items()}, buf)
    write_bytes_atomic(out, (buf.getvalue(),))
    meta = {**bcfg, "strides": list(bcfg["strides"])}
    info = {"backbone": meta, "source": str(src), "kind": st["kind"], "epoch": int(st.get("epoch", 0))}
    write_bytes_atomic(side, (json.dumps(info, indent=2).encode() + b"\n",))
    return out, side
