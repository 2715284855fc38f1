"""All-gather with gradient, for InfoNCE keys under torch.distributed.

y = [x_0; x_1; ...; x_{W-1}] (rank order). Every rank computes its own loss L_r from y, so the gradient
that reaches x_r is sum over ranks r' of dL_{r'} / dy[rows of r]: backward all-reduces (sums) the
gradient of y and keeps this rank's rows. With DDP averaging the parameter gradients, that is the
gradient of mean_r L_r. Use with info_nce: keys = gather_with_grad(k); query i of rank r then has its
positive at row r * N_local + i (equal sizes), e.g. positive = torch.arange(M) + rank * N_local.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group, uneven):
        world = dist.get_world_size(group)
        rank = dist.get_rank(group)
        x = x.contiguous()
        if uneven:
            n = torch.tensor([x.shape[0]], device=x.device, dtype=torch.int64)
            counts = [torch.zeros_like(n) for _ in range(world)]
            dist.all_gather(counts, n, group=group)
            sizes = [int(c) for c in counts]
        else:
            sizes = [x.shape[0]] * world
        longest = max(sizes)
        if x.shape[0] < longest:
            x = torch.cat([x, x.new_zeros((longest - x.shape[0],) + tuple(x.shape[1:]))])
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x, group=group)
        ctx.group, ctx.rank, ctx.sizes = group, rank, sizes
        return torch.cat([p[:s] for p, s in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None, None


def gather_with_grad(x, group=None, *, uneven=False):
    """Concatenate x (n_r, ...) from all ranks of `group` along dim 0, with gradient back to each x.

    Without an initialized process group (or with one rank) returns x unchanged. Ranks must pass
    the same shape unless uneven=True (one extra all_gather of the row counts, and a host sync).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return x
    return _GatherWithGrad.apply(x, group, uneven)
