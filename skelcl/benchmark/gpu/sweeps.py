"""Section sweeps: tile configurations timed at the headline shapes. The graph convolution's dW tiles (the
4-warp variant without spills first) and its forward tiles, then the InfoNCE forward / dk tiles and the key
splits of the long-queue forward."""

from __future__ import annotations

import traceback

import torch

from skelcl.benchmark.gpu.common import TAU, BudgetExceeded, C, D, emit, graph, unit_rows
from skelcl.benchmark.gpu.rows import unit_shape

# Graph conv dW tiles (BO, BC, BT, warps, stages, prefetch) at the unit shape (C 256, bf16). First: the
# 4-warp variant that compiles without spills for sm_90 (aot_check_graph_conv.py --sweep-only, Triton 3.9:
# STACK 0; the 4-warp BT 4 variant spilled 544 bytes). Second: the default (8 warps, STACK 0).
DW_SWEEP = [
    (64, 64, 2, 4, 3, True),
    (64, 64, 4, 8, 3, False),
    (64, 64, 4, 8, 3, True),
    (64, 128, 4, 8, 3, False),
    (128, 64, 4, 8, 3, False),
    (64, 64, 2, 4, 3, False),
]
FWD_SWEEP = [  # the first is the default
    (64, 64, 4, 8, 3, True),
    (64, 64, 4, 8, 3, False),
    (64, 64, 4, 8, 4, True),
    (128, 64, 2, 8, 3, True),
    (64, 64, 2, 4, 3, True),
]


def timed_under(module, override, fn, rec):
    """Median ms of fn with the kernel module's tile overrides set (cleared afterwards), after one call that
    compiles; None with rec["error"] set when the configuration fails."""
    module.OVERRIDE.clear()
    module.OVERRIDE.update(override)
    try:
        fn()
        C.bench.sync()
        return C.bench.bench_ms(fn, 100)
    except BudgetExceeded:
        raise
    except Exception:  # noqa: BLE001
        rec["error"] = traceback.format_exc()[-400:]
        return None
    finally:
        module.OVERRIDE.clear()


def sweep_graph_conv():
    case, n, c, t = unit_shape()
    dt = torch.bfloat16
    x = torch.randn(n, c, t, 25, device=C.dev, dtype=dt)
    g = torch.randn(n, c, t, 25, device=C.dev, dtype=dt)
    w = (torch.randn(3, c, c, device=C.dev) / (3 * c) ** 0.5).to(dt)
    a = graph().to(dt)
    runs = dict(
        fwd=lambda: C.gck._launch_gc(x, w, a, None, None, False, None, True, False),
        dw=lambda: C.gck._launch_dw(g, x, a),
    )
    names = ("BO", "BC", "BT", "num_warps", "num_stages", "prefetch")
    for kind, cfgs in (("dw", DW_SWEEP), ("fwd", FWD_SWEEP)):
        for cfg in [(16, 16, 2, 1, 1, True)] if C.small else cfgs:
            C.bench.check_budget(15)
            rec = dict(kind=kind, cfg=list(cfg), cfg_names="BO BC BT warps stages prefetch")
            ms = timed_under(C.gck, {f"{kind}_{key}": v for key, v in zip(names, cfg)}, runs[kind], rec)
            if ms:
                rec["TFLOPs_padded"] = 2 * n * t * 32 * 3 * c * (c + 32) / ms / 1e9
            emit(f"sweep/graph_conv/{case}/bf16/{kind}/" + "_".join(map(str, cfg)), "ms", ms, **rec)
    C.bench.free()


def sweep_infonce():
    m = 64 if C.small else 65536
    names = ("BLOCK_M", "BLOCK_N", "num_warps", "num_stages")
    for tag, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        torch.set_float32_matmul_precision("high")
        q, k = unit_rows(m, dtype), unit_rows(m, dtype)
        lse, _ = C.it._fwd(q, k, None, None, None, None, None, TAU, False)
        g = torch.full((m,), 1.0 / m, device=C.dev)
        runs = dict(
            fwd=lambda q=q, k=k: C.it._fwd(q, k, None, None, None, None, None, TAU, True),
            dk=lambda q=q, k=k, lse=lse, g=g: C.it._dk(q, k, lse, g, None, None, None, TAU),
        )
        for kind, cfgs in (("fwd", C.it.SWEEP_FWD[tag]), ("dk", C.it.SWEEP_DK[tag])):
            for cfg in [(16, 16, 1, 1)] if C.small else cfgs:
                C.bench.check_budget(15)
                rec = dict(kind=kind, cfg=list(cfg), cfg_names="BLOCK_M BLOCK_N warps stages", M=m, N=m)
                ms = timed_under(C.it, {f"{kind}_{key}": v for key, v in zip(names, cfg)}, runs[kind], rec)
                if ms:
                    rec["TFLOPs"] = 4 * m * m * D / ms / 1e9
                emit(f"sweep/infonce/inbatch_{m}/{tag}/{kind}/" + "_".join(map(str, cfg)), "ms", ms, **rec)
        del q, k, lse
        C.bench.free()
    m, nq = (32, 300) if C.small else (4096, 1052672)
    q, keys = unit_rows(m, torch.bfloat16), unit_rows(nq, torch.bfloat16)
    for splits in (1, 2) if C.small else (1, 8, 16, 33, 66, 132):
        C.bench.check_budget(10)
        rec = dict(kind="fwd_splits", splits=splits, M=m, N=nq)
        fwd = lambda: C.it._fwd(q, keys, None, None, None, None, None, TAU, True)  # noqa: E731
        ms = timed_under(C.it, {"splits": splits}, fwd, rec)
        emit(f"sweep/infonce/queue_{m}+{nq}/bf16/splits_{splits}", "ms", ms, **rec)
    C.bench.free()


def run():
    sweep_graph_conv()
    sweep_infonce()
