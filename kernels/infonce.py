"""InfoNCE over a key set [k; queue] that never holds the full query x key matrix.

loss_i = -log( sum_{p in pos(i)} exp(s_ip) / sum_{j not left out} exp(s_ij) ),  s_ij = <q_i, key_j> / tau
"""

from __future__ import annotations

import torch


def info_nce_reference(q, k, queue=None, *, positive=None, q_group=None, k_group=None, temperature=0.07,
                       reduction="mean"):
    """Placeholder dense reference; replaced by the chunked reference of the kernel issue."""
    keys = k if queue is None else torch.cat([k, queue.detach()], 0)
    logits = (q @ keys.t()) / temperature
    m = q.shape[0]
    if positive is None:
        positive = torch.arange(m, device=q.device)
    if positive.dim() == 1:
        positive = positive[:, None]
    pos_mask = torch.zeros_like(logits, dtype=torch.bool)
    valid = positive >= 0
    rows = torch.arange(m, device=q.device)[:, None].expand_as(positive)
    pos_mask[rows[valid], positive[valid]] = True
    if q_group is not None and k_group is not None:
        same = q_group[:, None] == k_group[None, :]
        drop = torch.zeros_like(pos_mask)
        drop[:, : k.shape[0]] = same
        drop &= ~pos_mask
        logits = logits.masked_fill(drop, float("-inf"))
    loss = torch.logsumexp(logits, 1) - torch.logsumexp(logits.masked_fill(~pos_mask, float("-inf")), 1)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def info_nce(q, k, queue=None, **kwargs):
    """Dispatcher: the Triton kernel on CUDA tensors (once available), the reference elsewhere."""
    return info_nce_reference(q, k, queue, **kwargs)
