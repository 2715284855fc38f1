"""Section setup: versions, the card and the commit the check runs at."""

from __future__ import annotations

import torch

from skelcl.benchmark.gpu.common import ROOT, C, emit
from skelcl.benchmark.record import git_info, versions


def run():
    v = versions()
    info = dict(torch=torch.__version__, triton=v["triton"], numpy=v["numpy"], small=C.small)
    info["f32_matmul_precision"] = torch.get_float32_matmul_precision()
    if C.dev == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(sms=props.multi_processor_count, mem_GiB=round(props.total_memory / 2**30, 1))
        card = torch.cuda.get_device_name()
    else:
        card = "cpu (--small dry run: no figure here is a measurement)"
    git = git_info(ROOT)
    info["commit"], info["dirty"] = git["revision"], git["dirty"]
    emit("env", "card", card, **info)
