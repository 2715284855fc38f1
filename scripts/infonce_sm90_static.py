#!/usr/bin/env python
"""Compile the InfoNCE kernels for sm_90 (H100/H200) without a GPU and print what the compiler made.

    python scripts/infonce_sm90_static.py            # every default tile configuration
    python scripts/infonce_sm90_static.py --sweep    # also the configurations the GPU sweep times

Uses triton.compile with a GPUTarget (the ptxas bundled with Triton does the assembly), then cuobjdump
and nvdisasm from the same bundle. Per kernel variant: registers per thread, shared memory, local-memory
traffic in SASS (LDL/STL: spills), the tensor-core instructions (HGMMA is Hopper's warpgroup MMA; HMMA
or none means a slower path) and the MUFU.EX2 count. This machine's Triton may differ from the GPU
machine's (3.6); treat the numbers as leads, the timings of scripts/gpu_check.py decide.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
warnings.filterwarnings("ignore")

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

try:
    import skelcl.kernels.infonce_triton as it
except ImportError:  # a working tree without the editable install: kernels/ is skelcl.kernels
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    spec = importlib.util.spec_from_file_location(
        "skelcl.kernels", root / "kernels" / "__init__.py", submodule_search_locations=[str(root / "kernels")]
    )
    sys.modules["skelcl.kernels"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sys.modules["skelcl.kernels"])
    import skelcl.kernels.infonce_triton as it

TARGET = GPUTarget("cuda", 90, 32)
BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
TY = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}
FLOATS = ("scale2", "inv_tau")


def source(kernel, dtype, consts, d):
    """ASTSource with the launch's signature: data pointers of the input dtype, float32 statistics,
    int64 index tables, int32 sizes; pointers and d marked 16-divisible as the launcher's would be."""
    data = {"q_ptr", "k_ptr", "queue_ptr", "dk_ptr"}
    index = {"pos_ptr", "qg_ptr", "kg_ptr", "queue_g_ptr"}
    sig, attrs = {}, {}
    for i, name in enumerate(kernel.arg_names):
        if name in consts:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*" + (TY[dtype] if name in data else "i64" if name in index else "fp32")
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name in FLOATS:
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
            if name == "d" and d % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    return ASTSource(kernel, sig, consts, attrs)


def inspect(name, kernel, dtype, d, consts, cfg):
    try:
        compiled = triton.compile(
            source(kernel, dtype, consts, d),
            target=TARGET,
            options=dict(num_warps=cfg["num_warps"], num_stages=cfg["num_stages"]),
        )
    except Exception as e:  # noqa: BLE001
        print(f"{name:58s} COMPILE FAILED: {repr(e)[:300]}")
        return False
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "k.cubin")
        Path(cubin).write_bytes(compiled.asm["cubin"])
        usage = subprocess.run(
            [BIN / "cuobjdump", "-res-usage", cubin], capture_output=True, text=True
        ).stdout
        sass = subprocess.run([BIN / "nvdisasm", cubin], capture_output=True, text=True).stdout
    regs = re.search(r"REG:(\d+)", usage).group(1)
    mma = sorted(set(re.findall(r"\b(HGMMA\.[0-9x]+|HMMA\.[0-9]+)", sass)))
    spills = len(re.findall(r"\b(LDL|STL)\b", sass))
    print(
        f"{name:58s} regs {regs:>3s}  smem {compiled.metadata.shared // 1024:>3d} KiB  LDL/STL {spills:>4d}  "
        f"EX2 {sass.count('MUFU.EX2'):>3d}  {','.join(mma) or 'NO TENSOR-CORE MMA'}"
    )
    return True


def fwd_consts(cfg, d, dtype, groups, precision):
    bd = it._block_d(d)
    return dict(BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_D=bd, EVEN_D=bd == d, GROUPS=groups,
                QUEUE_GROUPS=groups, POS_TABLE=groups, P=2 if groups else 1, NEED_E=True, HAS_QUEUE=True,
                PREC=precision, UPCAST=False)  # fmt: skip


def dk_consts(cfg, d, dtype, groups, precision):
    return dict(BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_D=it._block_d(d), GROUPS=groups,
                POS_TABLE=groups, P=2 if groups else 1, PREC=precision, UPCAST=False)  # fmt: skip


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", action="store_true", help="also the tile configurations of the GPU sweep")
    args = ap.parse_args()
    cuda = torch.device("cuda")
    ok = True
    variants = []
    for dtype, f32 in ((torch.bfloat16, "high"), (torch.float16, "high"), (torch.float32, "high"),
                       (torch.float32, "highest")):  # fmt: skip
        for d in (32, 64, 128, 256):
            for groups in (False, True):
                variants.append((dtype, f32, d, groups))
    for dtype, f32, d, groups in variants:
        torch.set_float32_matmul_precision(f32)
        prec = it._precision(dtype, cuda)
        tag = f"{TY[dtype]}{'/' + prec if dtype == torch.float32 else ''} d={d}{' groups' if groups else ''}"
        for kind, kernel, config, consts in (
            ("fwd", it._fwd_kernel, it.fwd_config, fwd_consts),
            ("dk ", it._dk_kernel, it.dk_config, dk_consts),
        ):
            cfg = config(d, dtype, cuda, groups)
            name = f"{kind} {tag} {tuple(cfg.values())}"
            ok &= inspect(name, kernel, dtype, d, consts(cfg, d, dtype, groups, prec), cfg)
    if args.sweep:
        for tag, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
            torch.set_float32_matmul_precision("high")
            for kind, kernel, table, consts in (("fwd", it._fwd_kernel, it.SWEEP_FWD, fwd_consts),
                                                ("dk ", it._dk_kernel, it.SWEEP_DK, dk_consts)):  # fmt: skip
                for c in table[tag]:
                    cfg = dict(zip(it._TILE_NAMES, c))
                    cx = consts(cfg, 128, dtype, False, it._precision(dtype, cuda))
                    ok &= inspect(f"sweep {kind} {tag} d=128 {c}", kernel, dtype, 128, cx, cfg)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
