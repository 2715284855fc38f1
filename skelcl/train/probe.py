"""The online probe of pretraining: how well the frozen query encoder's frame features tell the actions
apart, every pretrain.probe_every optimizer steps, on labeled sequences pretraining never reads.

Data: a seeded choice of pretrain.probe_sequences sequences of the split part pretrain.probe_part
(default "test": pretraining reads data.part only, so these are held out of it; the probe only watches,
nothing is selected on it). Half of them (seeded) form the memory bank, the other half the queries.

Features: the encoder in eval mode, without gradient, one sequence at a time (no padding), its last
layer's output averaged over joints and bodies, (C, T') -> linearly upsampled to the T frames ->
L2-normalized per frame, (T, C).

Per-frame kNN: the bank holds every 4th labeled frame of the bank sequences (N frames, labels in
0..C incl. background); a query frame's class scores are the shares of its k = 10 most cosine-similar bank
frames per class, (T, C+1). probe_frame_accuracy: argmax against the labels of the query frames (labels
>= 0); probe_avg_mAP: avg mAP@0.1:0.5 (babel protocol) of the proposals from those scores
(skelcl.eval, as fine-tuning evaluates). probe_seconds: the probe's wall time.

It uses no random number generator of torch or numpy's global state (the choice of sequences is a
numpy Generator of its own), changes no parameter or buffer, and puts the encoder back in the mode it
found it in: a run with and without the probe trains the same weights.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from skelcl.errors import SkelclError
from skelcl.train.data import SequenceStore, to_tensor

K, BANK_STRIDE = 10, 4


class Probe:
    """probe(encoder) -> {"probe_frame_accuracy", "probe_avg_mAP", "probe_seconds"}."""

    def __init__(self, cache, bodies: int, sequences: int, seed: int, device):
        n = len(cache)
        if n < 2:
            raise SkelclError(f"pretrain.probe_every: the probe part holds {n} sequence(s), it needs 2")
        rng = np.random.default_rng([int(seed), 0x9B0])
        pick = rng.permutation(n)[: min(int(sequences), n)]
        half = len(pick) // 2
        self.bank = SequenceStore(cache.subset(np.sort(pick[:half])), bodies)
        self.query = SequenceStore(cache.subset(np.sort(pick[half:])), bodies)
        self.background = len(cache.classes) - 1
        self.device = device

    @torch.no_grad()
    def features(self, encoder, store: SequenceStore) -> list:
        """Per sequence: float32 (T, C) L2-normalized frame features and int64 (T,) labels."""
        out = []
        for i in range(len(store)):
            x, _, labels = store.batch([i])
            h, _ = encoder(to_tensor(x, self.device))  # (1, C, T', V)
            f = F.interpolate(h.float().mean(dim=3), size=x.shape[1], mode="linear", align_corners=False)
            out.append((F.normalize(f[0].T, dim=1).cpu(), np.asarray(labels[0][: x.shape[1]])))
        return out

    def __call__(self, encoder) -> dict:
        from skelcl.eval import evaluate_protocol, proposals_from_scores, segments_from_labels

        t0 = time.time()
        was_training = encoder.training
        encoder.eval()
        try:
            bank, query = self.features(encoder, self.bank), self.features(encoder, self.query)
        finally:
            encoder.train(was_training)
        C1 = self.background + 1
        bank_f, bank_y = [], []
        for f, y in bank:
            keep = np.flatnonzero(y >= 0)[::BANK_STRIDE]
            bank_f.append(f[keep])
            bank_y.append(torch.as_tensor(y[keep], dtype=torch.long))
        bank_f, bank_y = torch.cat(bank_f), torch.cat(bank_y)
        k = min(K, len(bank_y))
        right = total = 0
        gt, pred = {}, {}
        for j, (f, y) in enumerate(query):
            idx = (f @ bank_f.T).topk(k, dim=1).indices  # (T, k)
            scores = F.one_hot(bank_y[idx], C1).float().mean(dim=1).numpy()  # (T, C+1)
            lab = y >= 0
            right += int((scores.argmax(axis=1)[lab] == y[lab]).sum())
            total += int(lab.sum())
            gt[str(j)] = segments_from_labels(y, background=self.background)
            pred[str(j)] = proposals_from_scores(scores, method="sweep")
        res = evaluate_protocol(gt, pred, "babel", num_classes=self.background)
        return {"probe_frame_accuracy": right / max(1, total), "probe_avg_mAP": float(res["avg_mAP_0.1:0.5"]),
                "probe_seconds": time.time() - t0}  # fmt: skip


def make_probe(cfg: dict, device):
    """The Probe of a pretraining config, or None when pretrain.probe_every is 0."""
    p, d = cfg["pretrain"], cfg["data"]
    if not int(p.get("probe_every") or 0):
        return None
    from skelcl.data import open_cache

    if not d.get("split"):
        raise SkelclError(
            "pretrain.probe_every needs data.split: the probe reads a part pretraining never reads"
        )
    part = p.get("probe_part") or "test"
    if part == d["part"]:
        raise SkelclError(f"pretrain.probe_part {part!r} is the part pretraining reads (data.part)")
    cache = open_cache(d["path"])
    cache = cache.subset(cache.split(d["split"], part))
    return Probe(
        cache, int(d["bodies"]), int(p.get("probe_sequences") or 64), int(cfg["train"]["seed"]), device
    )
