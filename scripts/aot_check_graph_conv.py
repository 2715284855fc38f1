#!/usr/bin/env python
"""Compile the graph_conv Triton kernels for sm_90 (H100) on a machine without a GPU and print, per
backbone layer shape and launch, registers, stack (spilled) bytes, shared memory, whether wgmma was
used and how X tiles load. Needs only the ptxas / cuobjdump shipped inside the triton wheel.

    TRITON_DEFAULT_FP_FUSION=1 python scripts/aot_check_graph_conv.py            # backbone shapes
    TRITON_DEFAULT_FP_FUSION=1 python scripts/aot_check_graph_conv.py --sweep    # + gpu_check's sweeps

Arguments get the divisibility-by-16 hints a real launch at T = 64 gets (pointers, channel counts, T,
strides); V = 25 gets none. The default tiles in kernels/graph_conv_kernel.py were picked with this; the
comment above its fwd_config states what it prints (Triton 3.9, 2026-12-02: no STACK except the bf16
dA launches, layer 1 in bf16 and the float32 dA launch at layer 1). --sweep also compiles the dW and
forward tile candidates that scripts/gpu_check.py times at the unit shape (C 256, bf16).
"""

import argparse
import os
import re
import subprocess
import tempfile

import skelcl.kernels.graph_conv_kernel as gck
import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

TARGET = GPUTarget("cuda", 90, 32)
CUOBJ = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
DEV = torch.device("cuda")  # only read by the config functions; no GPU is touched
DIV16 = {"x_ptr", "w_ptr", "a_ptr", "b_ptr", "r_ptr", "y_ptr", "xa_ptr", "da_ptr", "g_ptr", "dw_ptr"}
DIV16 |= {"C_in", "C_out", "T", "swk", "swo", "swc", "sak"}


def compile_report(kernel, sig, consts, num_warps, num_stages):
    sig = {**sig, **{k: "constexpr" for k in consts}}
    names = list(sig)
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in DIV16 if n in sig and n not in consts}
    try:
        src = ASTSource(fn=kernel, signature=sig, constexprs=consts, attrs=attrs)
        k = triton.compile(src, target=TARGET, options=dict(num_warps=num_warps, num_stages=num_stages))
    except Exception as e:  # noqa: BLE001
        return "FAIL " + repr(e)[:400]
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(k.asm["cubin"])
    out = subprocess.run([CUOBJ, "-res-usage", f.name], capture_output=True, text=True).stdout
    os.unlink(f.name)
    usage = " ".join(re.findall(r"(REG:\d+|STACK:\d+)", out))
    ptx = k.asm["ptx"]
    mma = "wgmma" if "wgmma" in ptx else "NO-WGMMA"
    return f"{usage} smem={k.metadata.shared} {mma} cp.async={ptx.count('cp.async.cg')}"


def sweep():
    """The candidates of scripts/gpu_check.py at the unit shape (C_in = C_out = 256, bf16)."""
    from skelcl.benchmark.gpu.sweeps import DW_SWEEP, FWD_SWEEP

    p = "*bf16"
    fsig = dict(x_ptr=p, w_ptr=p, a_ptr=p, b_ptr="*fp32", r_ptr=p, y_ptr=p, xa_ptr=p, da_ptr="*fp32")
    fsig.update({n: "i32" for n in "C_in C_out T V n_tb swk swo swc sak sav saw".split()})
    dsig = dict(g_ptr=p, x_ptr=p, a_ptr=p, dw_ptr="*fp32")
    dsig.update({n: "i32" for n in "K C_in C_out T V n_tb num_tiles tiles_per_prog sak sav saw".split()})
    for bo, bc, bt, nw, ns, pf in DW_SWEEP:
        c = dict(saw=1, BO=bo, BC=bc, BT=bt, VP=32, PREC="tf32", ROUND=1, PREFETCH=pf)
        rep = compile_report(gck._gc_dw_kernel, dsig, c, nw, ns)
        print("bf16 dw-sweep 256 256", (bo, bc, bt, nw, ns, pf), rep, flush=True)
    for bo, bc, bt, nw, ns, pf in FWD_SWEEP:
        c = dict(K=3, HAS_BIAS=True, HAS_RES=False, RELU=False, STORE_Y=True, NEED_DA=False, swc=1, saw=1)
        c.update(PREC="tf32", ROUND=1, PREFETCH=pf, BO=bo, BC=bc, BT=bt, VP=32)
        rep = compile_report(gck._gc_kernel, fsig, c, nw, ns)
        print("bf16 fwd-sweep 256 256", (bo, bc, bt, nw, ns, pf), rep, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", action="store_true", help="also gpu_check.py's tile candidates")
    ap.add_argument("--sweep-only", action="store_true", help="only gpu_check.py's tile candidates")
    args = ap.parse_args()
    if args.sweep or args.sweep_only:
        sweep()
    if args.sweep_only:
        return
    for dt, tdt, rnd in (("bf16", torch.bfloat16, 1), ("fp32", torch.float32, 0)):
        p = f"*{dt}"
        fsig = dict(x_ptr=p, w_ptr=p, a_ptr=p, b_ptr="*fp32", r_ptr=p, y_ptr=p, xa_ptr=p, da_ptr="*fp32")
        fsig.update({n: "i32" for n in "C_in C_out T V n_tb swk swo swc sak sav saw".split()})
        dsig = dict(g_ptr=p, x_ptr=p, a_ptr=p, dw_ptr="*fp32")
        dsig.update({n: "i32" for n in "K C_in C_out T V n_tb num_tiles tiles_per_prog sak sav saw".split()})
        for ci, co in ((3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256)):
            # forward (weight contiguous: swc = 1); backward data on W^T, A^T views (swo = 1, sav = 1)
            for kind, cin, cout, da in (
                ("fwd", ci, co, False),
                ("bwd", co, ci, False),
                ("bwd+dA", co, ci, True),
            ):
                cfg = gck.fwd_config(cin, cout, tdt, DEV, da)
                c = dict(K=3, HAS_BIAS=kind == "fwd", HAS_RES=False, RELU=False, STORE_Y=True, NEED_DA=da)
                c.update(PREC="tf32", ROUND=rnd, PREFETCH=cfg["prefetch"], BO=cfg["BO"], BC=cfg["BC"])
                c.update(BT=cfg["BT"], VP=32, **(dict(swc=1, saw=1) if kind == "fwd" else dict(swo=1, sav=1)))
                rep = compile_report(gck._gc_kernel, fsig, c, cfg["num_warps"], cfg["num_stages"])
                print(dt, kind, ci, co, cfg, rep, flush=True)
            cfg = gck.dw_config(ci, co, tdt, DEV)
            c = dict(saw=1, BO=cfg["BO"], BC=cfg["BC"], BT=cfg["BT"], VP=32, PREC="tf32", ROUND=rnd)
            c["PREFETCH"] = cfg["prefetch"]
            rep = compile_report(gck._gc_dw_kernel, dsig, c, cfg["num_warps"], cfg["num_stages"])
            print(dt, "dw", ci, co, cfg, rep, flush=True)


if __name__ == "__main__":
    main()
