"""MoCo pretraining: query/momentum encoders, ring-buffer queues and the contrastive losses.

Methods and the views they read (from skelcl.augment, recipe of the same name):
  skeletonclr  v0 query, v1 key at the SAME tempo (two augmented views; the SkeletonCLR paper)
  rvtclr       v0 query, v1 key at the same tempo, v2 key at the other tempo (RVTCLR)
  aimclr       v0 query, v1 key at the other tempo, v2 extreme view (AimCLR-style)
With f = backbone output (B, C, T', V), q = normalize(A(f_q)) (A = GlobalHead, appearance), k = the
momentum encoder's normalize(A_k(f_k)) of v1, k' = that of v2 (rvtclr):

  L_A1 = InfoNCE(q_i; positive k_i; keys [k; queue])          (all methods; the other keys of the batch are
                                                               negatives too)
  rvtclr adds  L_A2 = InfoNCE(q_i; positive k'_i; keys [k'; queue])
               L_M  = mean_i max(0, margin - (<m_i, mk_i> - <m_i, mk'_i>)): the same-tempo key must score
                      higher than the other-tempo key on the motion head (tempo discrimination), with
                      [m; mk; mk'] = normalize(M([vel(f_q); vel(f_k); vel(f_k')])), M = MotionHead (BN MLP,
                      one call, shared batch statistics), vel(f) = mean over t, v of |f[t + 1] - f[t]|
                      (heads.motion_features), f_k, f_k' the momentum encoder's features of v1, v2 (the
                      head learns on all three rows, the query encoder through vel(f_q)). The recipe
                      centres both keys on the query's time span (rvtclr recipe, tempo align: query).
               Why (motion_order_acc stayed at chance, 0.46-0.56, before): M read the mean-pooled f, the
               same feature L_A1 and L_A2 make tempo-invariant (after 150 steps a linear probe on it told
               1x from 2x at 52 %, at init 62 %); every embedding was nearly collinear (cosine ~0.97), so
               the margin's gradient was weak, and the momentum head M_k only followed it; and the keys
               showed other moments than the query (independent offsets; the synthetic motions change
               speed from one segment to the next), so the tempo pair was confounded with the moment.
  aimclr adds  L_d = -sum_j softmax(l(q_i))_j.detach() * log softmax(l(e_i))_j   (D3M-like)
               with l(x)_j = <x, key_j> / tau over the same key set and e the extreme view's embedding,
               and after `nn_warmup_epochs` the `nn_topk` queue rows nearest to q_i join k_i as positives.
  snippet loss: z = normalize(SnippetHead(pool_S(f))) per snippet (B*S, d). The key snippets come from the
               other-tempo key (v2 for rvtclr, v1 for aimclr) or from v1 (skeletonclr). Query snippet
               (b, s) has positive key snippet (b, j*): j* = argmax_j <pool_S(f_q)[b, :, s],
               pool_S(f_k)[b, :, j]> ("feature", DenseCL-style, un-normalized; "cosine": L2-normalized)
               or the temporally aligned snippet ("aligned"; query snippets showing time the key view
               does not cover have none and are left out). Negatives: key snippets of the other videos in
               the batch and the snippet queue; the own video's other snippets (in the batch and in the
               snippet queue) are left out unless exclude_same_video is False. snippet_neighbours r: the
               key snippets within r of the positive (same video) are positives too. snippet_nn_topk k:
               after snippet_nn_warmup_epochs, the k snippet-queue rows nearest to each query snippet are
               extra positives (dense nearest-neighbour mining; rows of the own video are never mined
               while exclude_same_video is on).
  total:       L = L_A1 [+ L_A2 + L_M] [+ d3m_weight * L_d] + snippet_weight * L_s.

Queue rows carry the id of the video they came from (`video` in forward: the sequence's index in the
training set; snippet rows also their snippet index). With global_exclude_same_video (default) the
global queue's rows of a query's own video are left out of its loss (and never mined as neighbours), as
the snippet queue's are with exclude_same_video: a queue holds older keys of the query's own video
whenever the video came back within the queue's span (always for a queue longer than one epoch, and
sometimes for a shorter one, as the order is shuffled each epoch); they would otherwise be negatives.
stats report queue_own_share / squeue_own_share (share of the (query, queue row) pairs the loss keeps
whose row is of the query's own video; 0 with exclusion on) and queue_own_queries / squeue_own_queries
(share of queries that meet at least one such row).

Queues take the step's keys in flush_queues() (after backward); rvtclr's global queue takes the
same-tempo keys. Queue storage dtype (queue_dtype "auto"): the autocast dtype when the model runs under
CUDA autocast (bf16: the fused InfoNCE kernel reads 16-bit keys, and unit-norm rows lose nothing the
kernel would keep), float32 otherwise (CPU, or no autocast); or fixed by queue_dtype.
Every InfoNCE goes through skelcl.kernels.info_nce; under torch.distributed the keys (and their video ids)
are gathered from all ranks (skelcl.kernels.gather_with_grad) and the queues take the gathered keys, so
every rank keeps the same queues.
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
from skelcl.models.heads import GlobalHead, MotionHead, SnippetHead, motion_features, snippet_features

METHODS = ("skeletonclr", "rvtclr", "aimclr")
MATCHES = ("feature", "cosine", "aligned")
QUEUE_DTYPES = ("auto", "float32", "bfloat16", "float16")
# The views each method reads, in recipe order, and the view its snippet keys come from.
VIEWS = {
    "skeletonclr": ("query", "same-tempo key"),
    "rvtclr": ("query", "same-tempo key", "other-tempo key"),
    "aimclr": ("query", "other-tempo key", "extreme view"),
}
SNIPPET_KEY_VIEW = {"skeletonclr": 1, "rvtclr": 2, "aimclr": 1}
# Upper bounds of queue_size / snippet_queue_size "auto" (the authors' global queue; snippet queue 2x).
QUEUE_CAPS = {"queue_size": 32768, "snippet_queue_size": 65536}


class RingQueue(nn.Module):
    """A ring buffer of `size` rows of dimension `dim` (buffers: saved and restored with the model).

    enqueue(x, group, time) writes rows at ptr, ptr + 1, ... modulo size (wrapping around; if x has more
    rows than the queue only its last `size` rows are kept), with each row's group id (video) and time
    index (snippet), -1 when not given; get() / groups() / times() return the filled rows (all once full),
    or None while empty. Row order inside the buffer does not matter to the losses.
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        if size < 0:
            raise SkelclError(f"queue size must be >= 0, got {size}")
        self.size = int(size)
        self.register_buffer("data", torch.zeros(self.size, dim))
        self.register_buffer("group", torch.full((self.size,), -1, dtype=torch.long))
        self.register_buffer("time", torch.full((self.size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, x: torch.Tensor, group=None, time=None) -> None:
        if self.size == 0:
            return
        x = x.detach().to(self.data.dtype)[-self.size :]
        n = x.shape[0]
        idx = (int(self.ptr) + torch.arange(n, device=x.device)) % self.size
        self.data[idx] = x
        for buf, val in ((self.group, group), (self.time, time)):
            buf[idx] = -1 if val is None else val.to(buf.device, torch.long)[-self.size :]
        self.ptr.fill_((int(self.ptr) + n) % self.size)
        self.filled.fill_(min(self.size, int(self.filled) + n))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints from before rows carried ids: their rows belong to no video (never left out).
        for name in ("group", "time"):
            if prefix + "data" in state_dict and prefix + name not in state_dict:
                n = state_dict[prefix + "data"].shape[0]
                state_dict[prefix + name] = torch.full((n,), -1, dtype=torch.long)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def to_dtype(self, dtype: torch.dtype) -> None:
        """Store the rows in `dtype` from now on (existing rows converted)."""
        if self.data.dtype != dtype:
            self.data = self.data.to(dtype)

    def get(self):
        f = int(self.filled)
        return None if f == 0 else self.data[:f]

    def groups(self):
        f = int(self.filled)
        return None if f == 0 else self.group[:f]

    def times(self):
        f = int(self.filled)
        return None if f == 0 else self.time[:f]


def _rank_world():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def resolve_queue_sizes(queue_size, snippet_queue_size, keys_per_epoch=None, num_snippets=1):
    """(queue_size, snippet_queue_size, warnings). "auto": the keys one epoch adds (keys_per_epoch
    global keys, keys_per_epoch * num_snippets snippet keys), at most QUEUE_CAPS; without keys_per_epoch
    the caps. A warning names each queue that spans more than one epoch (then every query meets older
    rows of its own video: left out with exclusion on, negatives without)."""
    out, notes = [], []
    epoch_rows = {"queue_size": keys_per_epoch, "snippet_queue_size": None}
    if keys_per_epoch is not None:
        epoch_rows["snippet_queue_size"] = keys_per_epoch * num_snippets
    for key, value in (("queue_size", queue_size), ("snippet_queue_size", snippet_queue_size)):
        rows = epoch_rows[key]
        if value == "auto":
            value = QUEUE_CAPS[key] if rows is None else min(QUEUE_CAPS[key], rows)
        elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SkelclError(f"pretrain.{key} must be 'auto' or an integer >= 0, got {value!r}")
        if rows is not None and value > rows:
            notes.append(
                f"pretrain.{key} {value} spans {value / max(rows, 1):.2f} epochs ({rows} rows per epoch): "
                "queries meet older rows of their own video (left out with exclusion on); "
                f"pretrain.{key}=auto sizes it to one epoch"
            )
        out.append(int(value))
    return out[0], out[1], notes


def queue_storage_dtype(setting: str, cuda_autocast: bool, autocast_dtype=None) -> torch.dtype:
    """Queue storage dtype: `setting` unless "auto"; "auto" gives the autocast dtype under CUDA autocast
    (bf16 / fp16: the fused InfoNCE kernel computes on 16-bit keys there, so 16-bit storage loses nothing it
    would keep, and unit-norm rows fit both ranges) and float32 otherwise (CPU, where the reference InfoNCE
    computes in float32, or no autocast)."""
    if setting != "auto":
        return getattr(torch, setting)
    return autocast_dtype if cuda_autocast and autocast_dtype is not None else torch.float32


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


@torch.no_grad()
def queue_neighbours(x, queue, x_group=None, queue_group=None, k=5, chunk=256):
    """(M, k') long, k' = min(k, Q): the queue rows with the largest <x_i, row> for each row x_i of x (M, d),
    best first; rows with queue_group == x_group[i] are never chosen (given both), -1 where fewer rows
    remain. Computed in float32, `chunk` queries at a time (memory chunk * Q)."""
    qf = queue.detach().float()
    k = min(int(k), qf.shape[0])
    out = []
    for a in range(0, x.shape[0], chunk):
        s = x[a : a + chunk].detach().float() @ qf.t()
        if x_group is not None and queue_group is not None:
            s = s.masked_fill(x_group[a : a + chunk, None] == queue_group[None, :], float("-inf"))
        v, i = s.topk(k, dim=1)
        out.append(torch.where(torch.isfinite(v), i, -1))
    return torch.cat(out)


def own_rows(x_group, queue_group):
    """(M,) number of queue rows whose group equals x_group[i] (rows with group -1 belong to none)."""
    valid = queue_group[queue_group >= 0]
    if valid.numel() == 0 or x_group.numel() == 0:
        return torch.zeros(x_group.shape, dtype=torch.long, device=x_group.device)
    counts = torch.bincount(valid, minlength=int(x_group.max()) + 1)
    return counts[x_group]


def _own_stats(stats, name, x_group, queue_group, excluded):
    """stats[name + "_own_share"], [name + "_own_queries"] over the rows the loss keeps."""
    own = torch.zeros_like(x_group) if excluded else own_rows(x_group, queue_group)
    stats[f"{name}_own_share"] = float(own.sum()) / max(1, x_group.numel() * queue_group.numel())
    stats[f"{name}_own_queries"] = float((own > 0).float().mean())


def snippet_info_nce(
    zq, zk, queue, matched, temperature, exclude_same_video=True, offset=0, neighbours=0,
    video=None, queue_group=None, queue_positive=None,
):  # fmt: skip
    """Snippet InfoNCE. zq (B*S, d) query snippets of this rank's videos (row b*S + s), zk (B_all*S, d) key
    snippets of all ranks' videos (video v at rows v*S .. v*S + S-1), queue (Q, d) or None, matched (B, S)
    long: key snippet of the same video that is query (b, s)'s positive, or -1 for a query snippet without
    one (it is left out of the loss); offset: index of this rank's first video in zk; neighbours r: the key
    snippets j* - r .. j* + r of the same video (inside 0..S-1) are all positives; video (B_all,) ids of
    zk's videos (default 0..B_all-1) and queue_group (Q,) ids of the queue rows (default: none of a batch
    video); queue_positive (B*S, k) queue row indices (-1: none) that are extra positives. Loss of query
    (b, s): -log sum over positives exp(s_pos) / sum over kept keys exp(s), s = <zq, key> / tau; kept =
    positives, key snippets and queue rows of other videos (+ the own video's other snippets and queue
    rows if not exclude_same_video); the mean over the queries with a positive (0 when none, with a zero
    gradient that still reaches zk, so a rank without positives runs the same backward collectives)."""
    B, S = matched.shape
    dev = zq.device
    vid = torch.arange(zk.shape[0] // S, device=dev) if video is None else video.to(dev, torch.long)
    local = torch.arange(B, device=dev) + offset
    keep = (matched >= 0).reshape(-1)
    shift = torch.arange(-neighbours, neighbours + 1, device=dev)
    j = matched.reshape(-1, 1) + shift  # (B*S, 2r+1) key snippet indices
    positive = torch.where((j >= 0) & (j < S), local.repeat_interleave(S)[:, None] * S + j, -1)
    if queue_positive is not None and queue is not None:
        qp = queue_positive.to(dev, torch.long)
        positive = torch.cat([positive, torch.where(qp >= 0, qp + zk.shape[0], -1)], dim=1)
    if positive.shape[1] == 1:
        positive = positive[:, 0]
    groups = {}
    if exclude_same_video:
        groups = dict(q_group=vid[local].repeat_interleave(S)[keep], k_group=vid.repeat_interleave(S))
        if queue is not None and queue_group is not None:
            groups["queue_group"] = queue_group.to(dev, torch.long)
    if not bool(keep.any()):
        return zq.sum() * 0.0 + zk.sum() * 0.0
    return info_nce(zq[keep], zk, queue, positive=positive[keep], temperature=temperature, **groups)


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
        global_exclude_same_video: bool = True,
        snippet_neighbours: int = 0,
        snippet_nn_topk: int = 0,
        snippet_nn_warmup_epochs: int = 1,
        motion_margin: float = 1.0,
        d3m_weight: float = 1.0,
        nn_topk: int = 1,
        nn_warmup_epochs: int = 1,
        queue_dtype: str = "auto",
    ):
        super().__init__()
        if method not in METHODS:
            raise SkelclError(f"pretrain.method must be one of {', '.join(METHODS)}, got {method!r}")
        if match not in MATCHES:
            raise SkelclError(f"pretrain.match must be one of {', '.join(MATCHES)}, got {match!r}")
        if queue_dtype not in QUEUE_DTYPES:
            raise SkelclError(
                f"pretrain.queue_dtype must be one of {', '.join(QUEUE_DTYPES)}, got {queue_dtype!r}"
            )
        for key, value in (("num_snippets", num_snippets),):
            if value < 1:
                raise SkelclError(f"pretrain.{key} must be >= 1, got {value}")
        for key, value in (("snippet_neighbours", snippet_neighbours), ("snippet_nn_topk", snippet_nn_topk),
                           ("nn_topk", nn_topk), ("motion_margin", motion_margin)):  # fmt: skip
            if value < 0:
                raise SkelclError(f"pretrain.{key} must be >= 0, got {value}")
        queue_size, snippet_queue_size, _ = resolve_queue_sizes(queue_size, snippet_queue_size)
        self.method, self.snippet, self.match = method, bool(snippet), match
        self.momentum, self.temperature = float(momentum), float(temperature)
        self.num_snippets, self.snippet_weight = int(num_snippets), float(snippet_weight)
        self.exclude_same_video = bool(exclude_same_video)
        self.global_exclude_same_video = bool(global_exclude_same_video)
        self.snippet_neighbours = int(snippet_neighbours)
        self.snippet_nn_topk, self.snippet_nn_warmup_epochs = (
            int(snippet_nn_topk),
            int(snippet_nn_warmup_epochs),
        )
        self.motion_margin = float(motion_margin)
        self.d3m_weight, self.nn_topk, self.nn_warmup_epochs = (
            float(d3m_weight),
            int(nn_topk),
            int(nn_warmup_epochs),
        )
        self.queue_dtype = queue_dtype
        self.snippet_key_view = SNIPPET_KEY_VIEW[method]

        self.encoder_q = Backbone(**backbone)
        c = self.encoder_q.out_channels
        self.head_q = GlobalHead(c, dim)
        self.motion_q = MotionHead(c, dim) if method == "rvtclr" else None
        self.snip_q = SnippetHead(c, dim) if self.snippet else None
        self.encoder_k = copy.deepcopy(self.encoder_q)
        self.head_k = copy.deepcopy(self.head_q)
        self.snip_k = copy.deepcopy(self.snip_q)
        for p in self.key_parameters():
            p.requires_grad_(False)
        self.queue = RingQueue(queue_size, dim)
        self.squeue = RingQueue(snippet_queue_size if self.snippet else 0, dim)
        self._pending = []  # (queue, keys, groups, times) to enqueue after backward, see flush_queues

    def flush_queues(self) -> None:
        """Enqueue the keys of the last forward. Call after backward (the losses saved the queues for
        their gradient, so they must not change before it); the next forward also calls it."""
        for q, x, g, t in self._pending:
            q.enqueue(x, g, t)
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

    def storage_dtype(self, x: torch.Tensor) -> torch.dtype:
        """The queues' dtype for a forward on x (see queue_storage_dtype)."""
        cuda = x.is_cuda and torch.is_autocast_enabled("cuda")
        return queue_storage_dtype(self.queue_dtype, cuda, torch.get_autocast_dtype("cuda") if cuda else None)

    def forward(self, views, epoch: int = 0, align=None, video=None):
        """views: list of (B, T, M, 25, 3) tensors (see VIEWS); align: optional (B, S) long (aligned key
        snippet per query snippet, between view 0 and view snippet_key_view; required for match="aligned",
        else used only for the matching-accuracy statistic); video: optional (B,) long, each sample's
        video id (unique in the dataset; without it no queue row is left out). Returns (loss, stats) with
        stats a dict of floats (detached)."""
        need = VIEWS[self.method]
        if len(views) < len(need):
            raise SkelclError(
                f"pretrain.method {self.method} needs {len(need)} views ({', '.join(need)}); the "
                f"augmentation recipe gives {len(views)} (use pretrain.recipe={self.method})"
            )
        self.flush_queues()
        rank, _ = _rank_world()
        tau = self.temperature
        B = views[0].shape[0]
        for rq in (self.queue, self.squeue):
            rq.to_dtype(self.storage_dtype(views[0]))
        fq, _ = self.encoder_q(views[0])
        q = F.normalize(self.head_q(fq), dim=1)
        key_views = (1, 2) if self.method == "rvtclr" else (1,)
        with torch.no_grad():
            self.momentum_update()
            fk = {v: self.encoder_k(views[v])[0] for v in key_views}
            k = F.normalize(self.head_k(fk[1]), dim=1)
        k_all = gather_with_grad(k)
        video_all = None
        if video is not None:
            video = torch.as_tensor(video).to(q.device, torch.long)
            video_all = gather_with_grad(video)
        queue, qids = self.queue.get(), self.queue.groups()
        excl = self.global_exclude_same_video and video is not None
        groups = {}
        if excl:
            groups = dict(q_group=video, k_group=video_all)
            if queue is not None:
                groups["queue_group"] = qids
        pos = torch.arange(B, device=q.device) + rank * B
        stats = {}
        if (
            self.method == "aimclr"
            and epoch >= self.nn_warmup_epochs
            and queue is not None
            and self.nn_topk > 0
        ):
            nn_idx = queue_neighbours(q, queue, video if excl else None, qids, self.nn_topk)
            pos = torch.cat([pos[:, None], torch.where(nn_idx >= 0, nn_idx + k_all.shape[0], -1)], dim=1)
        loss_g = info_nce(q, k_all, queue, positive=pos, temperature=tau, **groups)
        loss = loss_g
        stats["loss_global"] = float(loss_g.detach())
        if queue is not None and video is not None:
            _own_stats(stats, "queue", video, qids, excl)
        if self.method == "rvtclr":
            with torch.no_grad():
                ko = F.normalize(self.head_k(fk[2]), dim=1)
            ko_all = gather_with_grad(ko)
            pos_o = torch.arange(B, device=q.device) + rank * B
            loss_x = info_nce(q, ko_all, queue, positive=pos_o, temperature=tau, **groups)
            # one head call on the three views: the same BatchNorm statistics for all (see MotionHead)
            pooled = torch.cat([motion_features(fq), motion_features(fk[1]), motion_features(fk[2])])
            m, mk, mo = F.normalize(self.motion_q(pooled), dim=1).split(B)
            same, other = (m * mk).sum(1), (m * mo).sum(1)
            loss_m = F.margin_ranking_loss(same, other, torch.ones_like(same), margin=self.motion_margin)
            loss = loss + loss_x + loss_m
            stats["loss_cross_tempo"] = float(loss_x.detach())
            stats["loss_motion"] = float(loss_m.detach())
            stats["motion_order_acc"] = float((same > other).float().mean())
        if self.method == "aimclr":
            fe, _ = self.encoder_q(views[2])
            e = F.normalize(self.head_q(fe), dim=1)
            keys = k_all if queue is None else torch.cat([k_all, queue.to(k_all.dtype)], dim=0)
            lq, le = q.detach() @ keys.t() / tau, e @ keys.t() / tau
            if excl and queue is not None:  # the own video's queue rows are left out here too
                own = video[:, None] == qids[None, :]
                own = torch.cat([torch.zeros_like(own[:, :1]).expand(-1, k_all.shape[0]), own], dim=1)
                lq, le = lq.masked_fill(own, float("-inf")), le.masked_fill(own, float("-inf"))
            target = F.softmax(lq.float(), dim=1)
            logp = F.log_softmax(le.float(), dim=1).masked_fill(target == 0, 0.0)
            loss_d = -(target * logp).sum(dim=1).mean()
            loss = loss + self.d3m_weight * loss_d
            stats["loss_d3m"] = float(loss_d.detach())
        if self.snippet:
            loss = loss + self.snippet_weight * self._snippet_loss(fq, fk, B, rank, epoch, align, video_all,
                                                                   stats)  # fmt: skip
        self._pending.append((self.queue, k_all.detach(), video_all, None))
        stats["loss"] = float(loss.detach())
        return loss, stats

    def _snippet_loss(self, fq, fk, B, rank, epoch, align, video_all, stats):
        S, tau = self.num_snippets, self.temperature
        sq = snippet_features(fq, S)  # (B, C, S)
        zq = F.normalize(self.snip_q(sq), dim=1).transpose(1, 2).reshape(B * S, -1)
        with torch.no_grad():
            sk = snippet_features(fk[self.snippet_key_view], S)
            zk = F.normalize(self.snip_k(sk), dim=1).transpose(1, 2).reshape(B * S, -1)
        # Feature matching (also computed under "aligned", for the agreement statistic).
        matched = match_snippets(sq, sk, "feature" if self.match == "aligned" else self.match)
        if align is not None:
            align = align.to(zq.device)
            has = align >= 0  # query snippets with a temporal counterpart in the key view
            if bool(has.any()):
                stats["snippet_match_acc"] = float((matched == align)[has].float().mean())
            stats["snippet_aligned_share"] = float(has.float().mean())
        if self.match == "aligned":
            if align is None:
                raise SkelclError("pretrain.match 'aligned' needs the views' frame alignment")
            matched = align
        zk_all = gather_with_grad(zk)
        squeue, sids = self.squeue.get(), self.squeue.groups()
        ids = video_all is not None
        qv = video_all[rank * B : rank * B + B].repeat_interleave(S) if ids else None
        excl = self.exclude_same_video and ids
        mined = None
        if self.snippet_nn_topk > 0 and epoch >= self.snippet_nn_warmup_epochs and squeue is not None:
            mined = queue_neighbours(zq, squeue, qv if excl else None, sids, self.snippet_nn_topk)
        loss_s = snippet_info_nce(
            zq, zk_all, squeue, matched, tau, self.exclude_same_video, offset=rank * B,
            neighbours=self.snippet_neighbours, video=video_all, queue_group=sids if ids else None,
            queue_positive=mined,
        )  # fmt: skip
        stats["loss_snippet"] = float(loss_s.detach())
        if squeue is not None and ids:
            _own_stats(stats, "squeue", qv, sids, self.exclude_same_video)
        n_all = zk_all.shape[0] // S
        times = torch.arange(S, device=zk.device).repeat(n_all)
        vids = video_all.repeat_interleave(S) if ids else None
        self._pending.append((self.squeue, zk_all.detach(), vids, times))
        return loss_s
