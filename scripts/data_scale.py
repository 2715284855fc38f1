"""Memory of pretraining on a large cache: time to open it, resident memory with data.memory_mb small vs
large, one process and two ranks (torchrun, each rank reading its share).

    python -m skelcl synth --out /tmp/c50k --sequences 50000 --dtype float16     # about 4.3 GB
    python scripts/data_scale.py --data /tmp/c50k --work /tmp/ds

Each run is a short pretraining (train.steps budget, tiny width) started as a subprocess; its resident
memory (VmRSS, and the anonymous / file-backed parts RssAnon / RssFile from /proc/PID/status, summed over
the worker processes under torchrun) is sampled every 0.5 s. Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


def status_kb(pid: int) -> dict:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def children(pid: int) -> list[int]:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    out = []
    for k in map(int, kids):
        out += [k, *children(k)]
    return out


def measure(cmd, log) -> dict:
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    peak: dict[str, dict] = {}
    while proc.poll() is None:
        # the python processes that train: the process itself, or torchrun's workers
        pids = [
            p for p in children(proc.pid) if "skelcl" in Path(f"/proc/{p}/cmdline").read_text(errors="ignore")
        ]
        for i, p in enumerate(pids or [proc.pid]):
            st = status_kb(p)
            d = peak.setdefault(f"process {i}", {})
            for k, v in st.items():
                d[k] = max(d.get(k, 0), v)
        time.sleep(0.5)
    mb = {name: {k: round(v / 1024) for k, v in d.items()} for name, d in peak.items()}
    return {"rc": proc.returncode, "seconds": round(time.time() - t0, 1), "peak_MB": mb}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--work", default="/tmp/skelcl_data_scale")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--memory", default="64,4096", help="data.memory_mb values (comma-separated)")
    args = ap.parse_args(argv)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    code = ("import time; t = time.perf_counter(); from skelcl.data import open_cache; "
            f"c = open_cache({args.data!r}); n = len(c); x = c[n - 1].joints; "
            "print(n, round(time.perf_counter() - t, 3))")  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import skelcl.data"], capture_output=True)
    imp = time.perf_counter() - t0
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    n, open_s = r.stdout.split()
    size = sum(f.stat().st_size for f in Path(args.data).iterdir())
    result = {"sequences": int(n), "open_and_read_last_s": float(open_s), "import_s": round(imp, 2),
              "cache_GB": round(size / 1e9, 2), "runs": []}  # fmt: skip
    base = ["pretrain", "--config", "pretrain_skeletonclr", "--data", args.data, "--quiet", "data.bodies=1",
            "model.width=0.125", f"train.batch_size={args.batch}", f"train.steps={args.steps}",
            "train.num_threads=1", "pretrain.queue_size=256", "pretrain.snippet_queue_size=1024",
            "train.ckpt_every=1000"]  # fmt: skip
    for ranks in (1, 2):
        for mb in map(int, args.memory.split(",")):
            if ranks == 2 and mb != min(map(int, args.memory.split(","))):
                continue
            name = f"r{ranks}_mem{mb}"
            cmd = [*base, "--out", str(work / name), f"data.memory_mb={mb}"]
            if ranks == 1:
                cmd = [sys.executable, "-m", "skelcl", *cmd]
            else:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    port = s.getsockname()[1]
                cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
                       "--nproc-per-node", "2", "--rdzv-backend", "c10d",
                       "--rdzv-endpoint", f"127.0.0.1:{port}", "-m", "skelcl", *cmd]  # fmt: skip
            with open(work / f"{name}.log", "w") as log:
                row = {"ranks": ranks, "memory_mb": mb, "steps": args.steps, "batch_per_rank": args.batch,
                       **measure(cmd, log)}  # fmt: skip
            result["runs"].append(row)
            print(json.dumps(row), flush=True)
    print(json.dumps(result, indent=2))
    (work / "result.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
