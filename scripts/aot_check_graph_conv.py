#!/usr/bin/env python
"""Compile the graph_conv Triton kernels for sm_90 (H100) on a machine without a GPU and print, per
backbone layer shape and launch, registers, stack (spilled) bytes, shared memory and whether wgmma
was used. Needs only the ptxas / cuobjdump shipped inside the triton wheel.

    TRITON_DEFAULT_FP_FUSION=1 python scripts/aot_check_graph_conv.py

The default tiles in kernels/graph_conv_kernel.py were picked with this (no STACK at the main shapes).
"""

import os
import re
import subprocess
import tempfile

import skelcl.kernels.graph_conv_kernel as gck
import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

target = GPUTarget("cuda", 90, 32)
CUOBJ = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump")
dev = torch.device("cuda")


def res(k):
    f = tempfile.NamedTemporaryFile(suffix=".cubin", delete=False)
    f.write(k.asm["cubin"])
    f.close()
    out = subprocess.run([CUOBJ, "-res-usage", f.name], capture_output=True, text=True).stdout
    return " ".join(re.findall(r"(REG:\d+|STACK:\d+)", out)), "wgmma" in k.asm["ptx"]


def comp(kernel, sig, consts, nw, ns):
    sig = dict(sig)
    sig.update({k: "constexpr" for k in consts})
    try:
        k = triton.compile(
            ASTSource(fn=kernel, signature=sig, constexprs=consts),
            target=target,
            options=dict(num_warps=nw, num_stages=ns),
        )
        r, wg = res(k)
        return f"{r} smem={k.metadata.shared} {'wgmma' if wg else 'NO-WGMMA'}"
    except Exception as e:
        return "FAIL " + repr(e)[:400]


def fsig(dt, bias):
    p = f"*{dt}"
    return {
        "x_ptr": p,
        "w_ptr": p,
        "a_ptr": p,
        "b_ptr": "*fp32",
        "r_ptr": p,
        "y_ptr": p,
        "xa_ptr": p,
        "da_ptr": "*fp32",
        "C_in": "i32",
        "C_out": "i32",
        "T": "i32",
        "V": "i32",
        "n_tb": "i32",
        "swk": "i32",
        "swo": "i32",
        "swc": "i32",
        "sak": "i32",
        "sav": "i32",
        "saw": "i32",
    }


dsig = lambda dt: {
    "g_ptr": f"*{dt}",
    "x_ptr": f"*{dt}",
    "a_ptr": f"*{dt}",
    "dw_ptr": "*fp32",
    "K": "i32",
    "C_in": "i32",
    "C_out": "i32",
    "T": "i32",
    "V": "i32",
    "n_tb": "i32",
    "num_tiles": "i32",
    "tiles_per_prog": "i32",
    "sak": "i32",
    "sav": "i32",
    "saw": "i32",
}
for dt, tdt, rnd in (("bf16", torch.bfloat16, 1), ("fp32", torch.float32, 0)):
    for ci, co in ((3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256)):
        # forward (weight contiguous: swc = 1), bwd_data on the transposed weight (swo = 1, sav = 1)
        for kind, cin, cout, da in (("fwd", ci, co, False), ("bwd", co, ci, False), ("bwd+dA", co, ci, True)):
            cfg = gck.fwd_config(cin, cout, tdt, dev, da)
            c = dict(
                K=3,
                HAS_BIAS=kind == "fwd",
                HAS_RES=False,
                RELU=False,
                STORE_Y=True,
                NEED_DA=da,
                PREC="tf32",
                ROUND=rnd,
                BO=cfg["BO"],
                BC=cfg["BC"],
                BT=cfg["BT"],
                VP=32,
            )
            c.update(dict(swc=1, saw=1) if kind == "fwd" else dict(swo=1, sav=1))
            print(
                dt,
                kind,
                ci,
                co,
                cfg,
                comp(gck._gc_kernel, fsig(dt, True), c, cfg["num_warps"], cfg["num_stages"]),
                flush=True,
            )
        cfg = gck.dw_config(ci, co, tdt, dev)
        c = dict(saw=1, BO=cfg["BO"], BC=cfg["BC"], BT=cfg["BT"], VP=32, PREC="tf32", ROUND=rnd)
        print(
            dt,
            "dw",
            ci,
            co,
            cfg,
            comp(gck._gc_dw_kernel, dsig(dt), c, cfg["num_warps"], cfg["num_stages"]),
            flush=True,
        )
