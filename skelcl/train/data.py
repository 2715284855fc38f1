"""Batches from a cache: normalized sequences, deterministic epoch order, augmentation, padding.

Sequences are NTU-normalized (skelcl.data.normalize) once and kept in memory (a dict per store).
Epoch order: np.random.default_rng([seed, epoch]).permutation, sharded across ranks; augmentation draws
come from np.random.default_rng([seed, epoch, step, rank]). So a run resumed at an epoch boundary sees
exactly the data (and augmentations) of an uninterrupted run, without saving Generator states.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict, deque

import numpy as np
import torch

from skelcl import augment
from skelcl.data.normalize import normalize_sequence
from skelcl.errors import SkelclError
from skelcl.train.distributed import shard, world_info


class SequenceStore:
    """Normalized joints and labels of the sequences of one cache view (positions 0..len-1); batches hold
    the first `bodies` body slots (default: all of the cache's).

    Normalized sequences are kept in memory up to `max_bytes` (least recently used dropped first), so a
    collection larger than that streams from the memory-mapped cache and is normalized again on each
    visit instead of filling the RAM. max_bytes 0 keeps nothing; None keeps everything."""

    def __init__(self, cache, bodies: int | None = None, max_bytes: int | None = 4 << 30):
        self.cache = cache
        self.bodies = cache.max_bodies if bodies is None else max(1, min(int(bodies), cache.max_bodies))
        self.max_bytes = max_bytes
        self._kept: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.kept_bytes = 0

    @classmethod
    def from_config(cls, cache, data_cfg: dict) -> SequenceStore:
        """The store for a run's `data` section (bodies, memory_mb)."""
        mb = data_cfg.get("memory_mb", 4096)
        if not isinstance(mb, int) or isinstance(mb, bool) or mb < 0:
            raise SkelclError(f"data.memory_mb must be an integer >= 0, got {mb!r}")
        return cls(cache, data_cfg["bodies"], max_bytes=mb << 20)

    def __len__(self) -> int:
        return len(self.cache)

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(joints float32 (T, M, 25, 3) NTU-normalized, labels int (T,)) of sequence i."""
        hit = self._kept.get(i)
        if hit is not None:
            self._kept.move_to_end(i)
            return hit
        seq = self.cache[i]
        try:
            joints = normalize_sequence(seq.joints)
        except SkelclError as err:
            raise SkelclError(f"{self.cache.path}: sequence {seq.name}: {err}") from None
        item = (joints, np.array(seq.labels))
        size = joints.nbytes + item[1].nbytes
        if self.max_bytes is None or size <= self.max_bytes:
            self._kept[i] = item
            self.kept_bytes += size
            while self.max_bytes is not None and self.kept_bytes > self.max_bytes:
                _, (j, lab) = self._kept.popitem(last=False)
                self.kept_bytes -= j.nbytes + lab.nbytes
        return item

    def batch(self, positions, max_frames=None, rng=None):
        """Zero-padded float32 (B, T, M, 25, 3), lengths (B,), labels (B, T) int64 (-1 = padding/unlabeled).

        Sequences longer than max_frames are cut to a window (random start from rng, else the start)."""
        js, ls = [], []
        for i in positions:
            j, lab = self.get(int(i))
            if max_frames is not None and len(j) > max_frames:
                s = int(rng.integers(0, len(j) - max_frames + 1)) if rng is not None else 0
                j, lab = j[s : s + max_frames], lab[s : s + max_frames]
            js.append(j)
            ls.append(lab)
        lengths = np.array([len(j) for j in js], dtype=np.int64)
        M = self.bodies
        out = np.zeros((len(js), int(lengths.max()), M, 25, 3), dtype=np.float32)
        labels = np.full((len(js), int(lengths.max())), -1, dtype=np.int64)
        for b, (j, lab) in enumerate(zip(js, ls)):
            out[b, : len(j), : j.shape[1]] = j[:, :M]
            labels[b, : len(lab)] = lab
        return out, lengths, labels


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, drop_last: bool):
    """This rank's batches (arrays of positions) for one epoch."""
    order = shard(np.random.default_rng([seed, epoch]).permutation(n))
    stop = len(order) // batch_size * batch_size if drop_last else len(order)
    return [order[i : i + batch_size] for i in range(0, stop, batch_size)]


def step_rng(seed: int, epoch: int, step: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, step, world_info()[0]])


def snippet_alignment(params, num_snippets: int, query: int = 0, key: int = 1) -> np.ndarray:
    """(B, S) int64: for each query snippet, the key snippet whose mean source frame is nearest, or -1 when
    the query snippet has no counterpart in the key view (ties: the nearest snippet position).

    Snippet s of a T-frame view covers the adaptive-pooling bin [floor(s T / S), ceil((s + 1) T / S)); its
    centre is the mean of its source frames. A query snippet has no counterpart when its centre lies more
    than one frame outside the source-frame range [min, max] of the nearest key snippet: with the 1x / 2x
    tempo views, the 2x view spans twice the time of the 1x view, so about half of its snippets show
    motion the 1x view never saw, and pairing them with the nearest edge snippet would be a wrong positive."""

    def bins(view):
        src = augment.source_frames(params, view).astype(np.float64)
        src[src < 0] = np.nan  # padding frames show no sequence frame
        T = src.shape[1]
        out = np.full((3, src.shape[0], num_snippets), np.nan)  # centre, min, max
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-padding bins stay NaN
            for s in range(num_snippets):
                a, b = (s * T) // num_snippets, -((-(s + 1) * T) // num_snippets)
                out[0, :, s] = np.nanmean(src[:, a:b], axis=1)
                out[1, :, s] = np.nanmin(src[:, a:b], axis=1)
                out[2, :, s] = np.nanmax(src[:, a:b], axis=1)
        return out

    cq = bins(query)[0]
    ck, lo, hi = bins(key)
    dist = np.abs(cq[:, :, None] - ck[:, None, :])
    # Edge padding repeats a sequence's first / last frame, so several key snippets can share one centre:
    # such exact ties go to the key snippet at the nearest position (a view paired with itself is the
    # identity); 1e-6 frames per snippet of position never outweighs a real difference of centres.
    pos = np.arange(num_snippets)
    dist = dist + 1e-6 * np.abs(pos[:, None] - pos[None, :])
    nearest = np.where(np.isnan(dist), np.inf, dist).argmin(axis=2)
    lo = np.take_along_axis(lo, nearest, axis=1)
    hi = np.take_along_axis(hi, nearest, axis=1)
    with np.errstate(invalid="ignore"):
        inside = (cq >= lo - 1.0) & (cq <= hi + 1.0)  # False where anything is NaN
    return np.where(inside, nearest, -1).astype(np.int64)


def label_subset(n: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted positions of the round(fraction * n) (at least 1) sequences that keep their labels."""
    if not 0 < fraction <= 1:
        raise SkelclError(f"finetune.label_fraction must be in (0, 1], got {fraction}")
    k = max(1, int(round(fraction * n)))
    return np.sort(np.random.default_rng([seed, 20]).choice(n, size=k, replace=False))


def to_tensor(x: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).to(device)


def pin(t: torch.Tensor, device) -> torch.Tensor:
    """t in page-locked memory when the batch goes to a CUDA device (so the copy can be non_blocking)."""
    return t.pin_memory() if torch.device(device).type == "cuda" else t


def to_device(tree, device):
    """Tensors of a (nested) list / tuple / dict moved to device, non_blocking (pinned sources on CUDA)."""
    if isinstance(tree, torch.Tensor):
        return tree.to(device, non_blocking=True)
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_device(t, device) for t in tree)
    if isinstance(tree, dict):
        return {k: to_device(v, device) for k, v in tree.items()}
    return tree


class Prefetcher:
    """Iterate make(0), make(1), ..., make(n - 1), with make(i + 1) running in a background thread while
    the caller works on item i (prefetch=True), or each item made when asked (prefetch=False).

    make(i) must depend only on i (the trainers' batches are functions of (seed, epoch, step)), so both
    modes yield identical items in the same order. The numba augmentation and numpy release the GIL, so
    on a GPU run the next batch is read and augmented while the current one computes. An exception in
    make is raised in the caller at that item. `wait_s` accumulates the seconds the caller spent blocked
    waiting for an item (with prefetch=False: all the time spent making items)."""

    def __init__(self, make, n: int, prefetch: bool = True, device=None):
        self.make, self.n, self.prefetch = make, int(n), bool(prefetch)
        self.device = None if device is None else torch.device(device)
        self.wait_s = 0.0

    def _ready(self, item):
        """The item's tensors on self.device (copied in the caller's thread, so on its CUDA stream)."""
        return item if self.device is None or self.device.type == "cpu" else to_device(item, self.device)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        import time
        from concurrent.futures import ThreadPoolExecutor

        if not self.prefetch:
            for i in range(self.n):
                t0 = time.perf_counter()
                item = self.make(i)
                self.wait_s += time.perf_counter() - t0
                yield self._ready(item)
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="skelcl-prefetch") as pool:
            pending = pool.submit(self.make, 0) if self.n else None
            try:
                for i in range(self.n):
                    t0 = time.perf_counter()
                    item = pending.result()
                    self.wait_s += time.perf_counter() - t0
                    pending = pool.submit(self.make, i + 1) if i + 1 < self.n else None
                    yield self._ready(item)
            finally:
                if pending is not None:  # the caller stopped early: let the running item finish
                    pending.cancel()
                    try:
                        pending.result()
                    except Exception:
                        pass


def host_tensor(x: np.ndarray, device) -> torch.Tensor:
    """A CPU tensor of x, pinned when it is bound for CUDA."""
    return pin(torch.from_numpy(np.ascontiguousarray(x)), device)


def pretrain_feed(store, batches, recipe, seed: int, epoch: int, backend: str, snippets: int, device,
                  prefetch: bool = True, key_view: int = 1, start: int = 0) -> Prefetcher:  # fmt: skip
    """Pretraining batches of one epoch from step `start` on (a mid-epoch resume): (views: list of
    (B, T, M, 25, 3) float32 tensors, align (B, S) long tensor between view 0 and view key_view, or None
    when snippets == 0) on `device`, step i augmented with step_rng(seed, epoch, i).
    feed.reversed: a deque of augment.reversed_share(params) per batch made, in step order (the consumer
    pops one per step: the share of the batch's output frames that play backwards, 0 by default)."""
    reversed_shares = deque()

    def make(step):
        x, lengths, _ = store.batch(batches[step])
        params = augment.sample(recipe, lengths, step_rng(seed, epoch, step))
        views = augment.apply(x, lengths, params, backend=backend, check_finite=False)
        align = snippet_alignment(params, snippets, key=key_view) if snippets else None
        views = [host_tensor(v, device) for v in views]
        reversed_shares.append(augment.reversed_share(params))
        return views, None if align is None else host_tensor(align, device)

    feed = Prefetcher(lambda i: make(start + i), len(batches) - start, prefetch, device)
    feed.reversed = reversed_shares
    return feed


def finetune_feed(store, batches, recipe, seed: int, epoch: int, backend: str, max_frames: int, device,
                  prefetch: bool = True, start: int = 0) -> Prefetcher:  # fmt: skip
    """Fine-tuning batches of one epoch from step `start` on: (view (B, T, M, 25, 3) float32, labels
    (B, T) int64, -1 = padding or unlabeled) on `device`; step i cuts windows and augments with
    step_rng(seed, epoch, i)."""

    def make(step):
        rng = step_rng(seed, epoch, step)
        x, lengths, labels = store.batch(batches[step], max_frames=max_frames, rng=rng)
        params = augment.sample(recipe, lengths, rng)
        (view,) = augment.apply(x, lengths, params, backend=backend, check_finite=False)
        return host_tensor(view, device), host_tensor(labels, device)

    return Prefetcher(lambda i: make(start + i), len(batches) - start, prefetch, device)
