"""Section peers: Inf-CL 1.2.1 and memeff 0.3.1, installed from wheels in --wheels (default .whl/), timed on
the headline InfoNCE rows. Without wheels the section records that and the run goes on."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import zipfile

import torch

from skelcl.benchmark.gpu.common import TAU, C, derive_speedups, emit
from skelcl.benchmark.gpu.rows import infonce_row, infonce_shapes


def run():

    if C.dev != "cuda":
        emit("peers", "installed", None, skipped="needs CUDA")
        return
    wheels = sorted(glob.glob(os.path.join(C.args.wheels, "*.whl")))
    if not wheels:
        emit("peers", "installed", None, skipped=f"no wheels in {C.args.wheels}")
        return
    pip = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--target", C.args.site]
    r = subprocess.run(pip + wheels, capture_output=True, text=True, timeout=60)
    how = "pip"
    if r.returncode != 0:  # pure-Python wheels: unpacking them is the whole installation
        how = f"unzip (pip failed: {r.stderr.strip()[-200:]})"
        for w in wheels:
            with zipfile.ZipFile(w) as z:
                z.extractall(C.args.site)
    emit("peers", "installed", len(wheels), wheels=[os.path.basename(w) for w in wheels], how=how)
    if C.args.site not in sys.path:
        sys.path.append(C.args.site)
    try:
        from inf_cl import cal_flash_loss

        C.peers["inf_cl"] = cal_flash_loss
    except Exception as e:  # noqa: BLE001
        emit("peer/inf_cl", "import", None, error=repr(e)[:300])
    try:
        from memeff import MemoryEfficientLiTQwen3Loss, MemoryEfficientQwen3Loss

        kw = dict(temperature=TAU, margin=2.0, normalized_inputs=True, stable=False)
        C.peers["memeff"] = MemoryEfficientQwen3Loss(**kw)
        C.peers["memeff_lit"] = MemoryEfficientLiTQwen3Loss(**kw)
    except Exception as e:  # noqa: BLE001
        emit("peer/memeff", "import", None, error=repr(e)[:300])
    case, m, n, nq, kgrad = infonce_shapes()["inbatch"]
    for impl in ("memeff", "inf_cl"):
        if impl in C.peers:
            infonce_row(case, m, n, nq, kgrad, torch.bfloat16, impl)
    if "memeff_lit" in C.peers:
        case, m, n, nq, kgrad = infonce_shapes()["locked"]
        infonce_row(case, m, n, nq, kgrad, torch.bfloat16, "memeff_lit")
    if "inf_cl" in C.peers:
        case, m, n, nq, kgrad = infonce_shapes()["queue"]
        infonce_row(case, m, n, nq, kgrad, torch.bfloat16, "inf_cl")
    derive_speedups()
