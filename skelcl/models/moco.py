"""MoCo pretraining: query/momentum encoders, ring-buffer queues and the contrastive losses.

Views (from skelcl.augment): v0 = query view, v1 = key view (the other tempo), v2 = extreme view (AimCLR).
With f = backbone output (B, C, T', V), q = normalize(GlobalHead(f_q)), k = normalize(GlobalHead_k(f_k)):

  global (both methods):  L_g = InfoNCE(q_i; positive k_i; keys [k; queue]).  The other keys of the batch
                          are negatives too (they join the queue at the end of the step anyway).
  AimCLR-style adds       L_d = -sum_j softmax(l(q_i))_j.detach() * log softmax(l(e_i))_j      (D3M-like)
                          with l(x)_j = <x, key_j> / tau over the same key set and e the extreme view's
                          embedding, and after `nn_warmup_epochs` the `nn_topk` queue entries nearest to
                          q_i join k_i as positives (multi-positive InfoNCE through info_nce's (M, P) table).
  snippet loss:           z = normalize(SnippetHead(pool_S(f))) per snippet (B*S, d); query snippet (b, s)
                          has positive key snippet (b, j*),
                          j* = argmax_j <pool_S(f_q)[b, :, s], pool_S(f_k)[b, :, j]>
                          (un-normalized backbone features, "feature", DenseCL-style; "cosine": of the
                          L2-normalized features) or the temporally aligned snippet ("aligned"; query
                          snippets showing time the key view does not cover have none and are left out);
                          negatives: key snippets of the other videos in the batch and the snippet queue;
                          other snippets of the same video are left out (q_group/k_group = video id)
                          unless exclude_same_video is False; with snippet_neighbours r, the key
                          snippets within r of the positive (same video) are positives too.
  total:                  L = L_g + d3m_weight * L_d + snippet_weight * L_s.

Queues take the step's keys in flush_queues() (after backward).
Every InfoNCE goes through skelcl.kernels.info_nce; under torch.distributed the keys are gathered from all
ranks (skelcl.kernels.gather_with_grad) and the queues take the gathered keys, so every rank keeps the same
queues.
"""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from skelcl.errors import SkelclError
from skelcl.kernels import gather_with_grad, info_nce
from skelcl.models.backbone import Backbone
from skelcl.models.heads import GlobalHead, SnippetHead, snippet_features

METHODS = ("skeletonclr", "aimclr")
MATCHES = ("feature", "cosine", "aligned")


class RingQueue(nn.Module):
    """A ring buffer of `size` rows of dimension `dim` (buffers: saved and restored with the model).

    enqueue(x) writes rows at ptr, ptr + 1, ... modulo size (wrapping around; if x has more rows than
    the queue only its last `size` rows are kept); get() returns the filled rows (all once full), or None
    while empty. Row order inside the buffer does not matter to the losses.
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        if size < 0:
            raise SkelclError(f"queue size must be >= 0, got {size}")
        self.size = int(size)
        self.register_buffer("data", torch.zeros(self.size, dim))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, x: torch.Tensor) -> None:
        if self.size == 0:
            return
        x = x.detach().to(self.data.dtype)[-self.size :]
        n = x.shape[0]
        idx = (int(self.ptr) + torch.arange(n, device=x.device)) % self.size
        self.data[idx] = x
        self.ptr.fill_((int(self.ptr) + n) % self.size)
        self.filled.fill_(min(self.size, int(self.filled) + n))

    def get(self):
        f = int(self.filled)
        return None if f == 0 else self.data[:f]


def _rank_world():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def match_snippets(sq: torch.Tensor, sk: torch.Tensor, rule: str = "feature") -> torch.Tensor:
    """Feature-similarity positives. sq, sk (B, C, S) pooled backbone features of the query and key views ->
    (B, S) long: j*(b, s) = argmax_j <sq[b, :, s], sk[b, :, j]> ("feature", DenseCL: un-normalized, so
    high-norm key snippets attract every query) or the same with both L2-normalized over C ("cosine")."""
    sq, sk = sq.detach().float(), sk.detach().float()
    if rule == "cosine":
        sq, sk = F.normalize(sq, dim=1), F.normalize(sk, dim=1)
    elif rule != "feature":
        raise SkelclError(f"match_snippets: rule must be 'feature' or 'cosine', got {rule!r}")
    return torch.einsum("bcs,bct->bst", sq, sk).argmax(dim=2)


def snippet_info_nce(zq, zk, queue, matched, temperature, exclude_same_video=True, offset=0, neighbours=0):
    """Snippet InfoNCE. zq (B*S, d) query snippets of this rank's videos (row b*S + s), zk (B_all*S, d) key
    snippets of all ranks' videos (video v at rows v*S .. v*S + S-1), queue (Q, d) or None, matched (B, S)
    long: key snippet of the same video that is query (b, s)'s positive, or -1 for a query snippet without
    one (it is left out of the loss); offset: index of this rank's first video in zk; neighbours r: the key
    snippets j* - r .. j* + r of the same video (inside 0..S-1) are all positives. Loss of query (b, s):
    -log sum over positives exp(s_pos) / sum over kept keys exp(s), s = <zq, key> / tau; kept = positives,
    key snippets of other videos and the queue (+ the own video's other snippets if not
    exclude_same_video); the mean over the queries with a positive (0 with a zero gradient when none)."""
    B, S = matched.shape
    video = torch.arange(B, device=zq.device) + offset
    keep = (matched >= 0).reshape(-1)
    shift = torch.arange(-neighbours, neighbours + 1, device=zq.device)
    j = matched.reshape(-1, 1) + shift  # (B*S, 2r+1) key snippet indices
    positive = torch.where((j >= 0) & (j < S), video.repeat_interleave(S)[:, None] * S + j, -1)
    if neighbours == 0:
        positive = positive[:, 0]
    q_group = k_group = None
    if exclude_same_video:
        q_group = video.repeat_interleave(S)[keep]
        k_group = torch.arange(zk.shape[0] // S, device=zq.device).repeat_interleave(S)
    if not bool(keep.any()):
        return zq.sum() * 0.0
    return info_nce(
        zq[keep], zk, queue, positive=positive[keep], q_group=q_group, k_group=k_group,
        temperature=temperature,
    )  # fmt: skip


class MoCo(nn.Module):
    def __init__(
        self,
        backbone: dict,
        method: str = "skeletonclr",
        snippet: bool = True,
        dim: int = 128,
        queue_size: int = 32768,
        snippet_queue_size: int = 65536,
        momentum: float = 0.999,
        temperature: float = 0.07,
        num_snippets: int = 19,
        snippet_weight: float = 1.5,
        match: str = "feature",
        exclude_same_video: bool = True,
        snippet_neighbours: int = 0,
        d3m_weight: float = 1.0,
        nn_topk: int = 1,
        nn_warmup_epochs: int = 1,
    ):
        super().__init__()
        if method not in METHODS:
            raise SkelclError(f"pretrain.method must be one of {', '.join(METHODS)}, got {method!r}")
        if match not in MATCHES:
            raise SkelclError(f"pretrain.match must be one of {', '.join(MATCHES)}, got {match!r}")
        if num_snippets < 1:
            raise SkelclError(f"pretrain.num_snippets must be >= 1, got {num_snippets}")
        self.method, self.snippet, self.match = method, bool(snippet), match
        self.momentum, self.temperature = float(momentum), float(temperature)
        self.num_snippets, self.snippet_weight = int(num_snippets), float(snippet_weight)
        self.exclude_same_video = bool(exclude_same_video)
        if snippet_neighbours < 0:
            raise SkelclError(f"pretrain.snippet_neighbours must be >= 0, got {snippet_neighbours}")
        self.snippet_neighbours = int(snippet_neighbours)
        self.d3m_weight, self.nn_topk, self.nn_warmup_epochs = (
            float(d3m_weight),
            int(nn_topk),
            int(nn_warmup_epochs),
        )

        self.encoder_q = Backbone(**backbone)
        c = self.encoder_q.out_channels
        self.head_q = GlobalHead(c, dim)
        self.snip_q = SnippetHead(c, dim) if self.snippet else None
        self.encoder_k = copy.deepcopy(self.encoder_q)
        self.head_k = copy.deepcopy(self.head_q)
        self.snip_k = copy.deepcopy(self.snip_q)
        for p in self.key_parameters():
            p.requires_grad_(False)
        self.queue = RingQueue(queue_size, dim)
        self.squeue = RingQueue(snippet_queue_size if self.snippet else 0, dim)
        self._pending = []  # (queue, keys) to enqueue after backward, see flush_queues

    def flush_queues(self) -> None:
        """Enqueue the keys of the last forward. Call after backward (the losses saved the queues for
        their gradient, so they must not change before it); the next forward also calls it."""
        for q, x in self._pending:
            q.enqueue(x)
        self._pending = []

    def _pairs(self):
        pairs = [(self.encoder_q, self.encoder_k), (self.head_q, self.head_k)]
        if self.snippet:
            pairs.append((self.snip_q, self.snip_k))
        return pairs

    def key_parameters(self):
        for _, k in self._pairs():
            yield from k.parameters()

    @torch.no_grad()
    def momentum_update(self) -> None:
        """theta_k <- m theta_k + (1 - m) theta_q (buffers such as BN statistics are copied)."""
        m = self.momentum
        for q, k in self._pairs():
            for pq, pk in zip(q.parameters(), k.parameters()):
                pk.mul_(m).add_(pq.detach(), alpha=1 - m)
            for bq, bk in zip(q.buffers(), k.buffers()):
                bk.copy_(bq)

    def forward(self, views, epoch: int = 0, align=None):
        """views: list of (B, T, M, 25, 3) tensors; align: optional (B, S) long (aligned key snippet per
        query snippet; required for match="aligned", else used only for the matching-accuracy statistic).
        Returns (loss, stats) with stats a dict of floats (detached)."""
        if self.method == "aimclr" and len(views) < 3:
            raise SkelclError("pretrain.method aimclr needs an augmentation recipe with an extreme view")
        self.flush_queues()
        rank, _ = _rank_world()
        tau = self.temperature
        B = views[0].shape[0]
        fq, _ = self.encoder_q(views[0])
        q = F.normalize(self.head_q(fq), dim=1)
        with torch.no_grad():
            self.momentum_update()
            fk, _ = self.encoder_k(views[1])
            k = F.normalize(self.head_k(fk), dim=1)
        k_all = gather_with_grad(k)
        queue = self.queue.get()
        pos = torch.arange(B, device=q.device) + rank * B
        stats = {}
        if (
            self.method == "aimclr"
            and epoch >= self.nn_warmup_epochs
            and queue is not None
            and self.nn_topk > 0
        ):
            topk = min(self.nn_topk, queue.shape[0])
            nn_idx = (q.detach() @ queue.t()).topk(topk, dim=1).indices + k_all.shape[0]
            pos = torch.cat([pos[:, None], nn_idx], dim=1)
        loss_g = info_nce(q, k_all, queue, positive=pos, temperature=tau)
        loss = loss_g
        stats["loss_global"] = float(loss_g.detach())
        if self.method == "aimclr":
            fe, _ = self.encoder_q(views[2])
            e = F.normalize(self.head_q(fe), dim=1)
            keys = k_all if queue is None else torch.cat([k_all, queue], dim=0)
            target = F.softmax(q.detach() @ keys.t() / tau, dim=1)
            loss_d = -(target * F.log_softmax(e @ keys.t() / tau, dim=1)).sum(dim=1).mean()
            loss = loss + self.d3m_weight * loss_d
            stats["loss_d3m"] = float(loss_d.detach())
        if self.snippet:
            S = self.num_snippets
            sq = snippet_features(fq, S)  # (B, C, S)
            zq = F.normalize(self.snip_q(sq), dim=1).transpose(1, 2).reshape(B * S, -1)
            with torch.no_grad():
                sk = snippet_features(fk, S)
                zk = F.normalize(self.snip_k(sk), dim=1).transpose(1, 2).reshape(B * S, -1)
            # Feature matching (also computed under "aligned", for the agreement statistic).
            matched = match_snippets(sq, sk, "feature" if self.match == "aligned" else self.match)
            if align is not None:
                align = align.to(q.device)
                has = align >= 0  # query snippets with a temporal counterpart in the key view
                if bool(has.any()):
                    stats["snippet_match_acc"] = float((matched == align)[has].float().mean())
                stats["snippet_aligned_share"] = float(has.float().mean())
            if self.match == "aligned":
                if align is None:
                    raise SkelclError("pretrain.match 'aligned' needs the views' frame alignment")
                matched = align
            zk_all = gather_with_grad(zk)
            loss_s = snippet_info_nce(
                zq, zk_all, self.squeue.get(), matched, tau, self.exclude_same_video, offset=rank * B,
                neighbours=self.snippet_neighbours,
            )  # fmt: skip
            loss = loss + self.snippet_weight * loss_s
            stats["loss_snippet"] = float(loss_s.detach())
            self._pending.append((self.squeue, zk_all.detach()))
        self._pending.append((self.queue, k_all.detach()))
        stats["loss"] = float(loss.detach())
        return loss, stats
