"""The benchmark cases: set-up and one callable per variant, the plain path beside each fast path.

A case is built by `build(name, quick, device, workdir)` and returns a Case: `variants` maps a label to a
callable that does one unit of work (returning None, or a dict of phase seconds for the steps), `plain`
maps a fast variant's label to the label of the plain path it is measured beside, and `items` says how
many items (sequences, megabytes, ...) one call handles, so rates are items / seconds. Sizes: `quick`
(CI: a few seconds per case) or full (the figures reported). The timing itself (rounds interleaved) is in
suite.py.

Plain paths: NumPy per-sample augmentation, np.loadtxt for the readers, plain file reads for the cache,
the per-group Python loops of the evaluation reference, a dense eager InfoNCE, the eager backbone, and
the trainers' steps without prefetching.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CPU_CASES = (
    "synthetic",
    "cache_read",
    "batch_read",
    "read_pku",
    "read_ntu",
    "augment",
    "evaluate",
    "backbone",
    "backbone_w1",
    "infonce",
    "pretrain_step",
    "snippet_share",
    "demo_step",
    "demo_ranks",
    "finetune_step",
)
GPU_CASES = ("backbone", "pretrain_step")


@dataclass
class Case:
    name: str
    unit: str  # "<item>/s" (rate: items / seconds) or "ms" (milliseconds per call)
    variants: dict  # label -> callable
    plain: dict = field(default_factory=dict)  # fast label -> plain label
    items: dict = field(default_factory=dict)  # label -> items per call (rates), default 1
    params: dict = field(default_factory=dict)
    rounds: int = 5
    warmup: int = 1
    sync: object = None  # called after each variant call (CUDA synchronize on a GPU)
    close: object = None  # called once the case is measured (stops worker processes)


def _sync(device):
    import torch

    return torch.cuda.synchronize if str(device).startswith("cuda") else None


# -- data ------------------------------------------------------------------------------------------------
def case_synthetic(quick, device, workdir):
    from skelcl.data.synthetic import generate

    n = 8 if quick else 300

    def run():
        for _ in generate(n, seed=0):
            pass

    return Case(
        "synthetic",
        "sequences/s",
        {"generate": run},
        items={"generate": n},
        params={"sequences": n},
        rounds=2 if quick else 5,
    )


def _cache(workdir, n):
    from skelcl.data.synthetic import generate_cache

    path = Path(workdir) / f"synth_{n}"
    if not (path / "meta.json").is_file():
        generate_cache(path, n, 0, progress=False)
    return path


def case_cache_read(quick, device, workdir):
    """Every sequence of a cache: our memory-mapped reader against a plain np.fromfile per sequence."""
    from skelcl.data import open_cache

    n = 16 if quick else 300
    path = _cache(workdir, n)
    ds = open_cache(path)
    dtype, frame = np.dtype(ds.frames.dtype), ds.frames.shape[1:]
    per_frame = int(np.prod(frame))

    def ours():
        for i in range(len(ds)):
            seq = ds[i]
            assert seq.joints.shape[0] == seq.labels.shape[0]

    def plain():
        with open(path / "frames.bin", "rb") as fj, open(path / "labels.bin", "rb") as fl:
            for off, length in zip(ds.offsets, ds.lengths):
                fj.seek(int(off) * per_frame * dtype.itemsize)
                j = np.fromfile(fj, dtype, int(length) * per_frame).reshape(-1, *frame).astype(np.float32)
                fl.seek(int(off) * 2)
                lab = np.fromfile(fl, "<i2", int(length)).astype(np.int64)
                assert len(j) == len(lab)

    return Case(
        "cache_read",
        "sequences/s",
        {"np.fromfile": plain, "memmap": ours},
        plain={"memmap": "np.fromfile"},
        items={"np.fromfile": len(ds), "memmap": len(ds)},
        params={"sequences": len(ds)},
        rounds=3 if quick else 7,
    )


def case_batch_read(quick, device, workdir):
    """Training batches from the store: normalized sequences kept in RAM against normalized on each read."""
    from skelcl.data import open_cache
    from skelcl.train.data import SequenceStore

    n, batch = (16, 8) if quick else (300, 32)
    ds = open_cache(_cache(workdir, n))
    kept, cold = SequenceStore(ds, 2, max_bytes=None), SequenceStore(ds, 2, max_bytes=0)
    for i in range(len(ds)):
        kept.get(i)
    rng = np.random.default_rng(0)
    pos = [rng.choice(len(ds), batch, replace=False) for _ in range(4)]

    def run(store):
        return lambda: [store.batch(p) for p in pos]

    items = 4 * batch
    return Case(
        "batch_read",
        "sequences/s",
        {"normalize_each_read": run(cold), "kept_in_ram": run(kept)},
        plain={"kept_in_ram": "normalize_each_read"},
        items={"normalize_each_read": items, "kept_in_ram": items},
        params={"sequences": n, "batch": batch},
        rounds=3 if quick else 7,
    )


# -- readers ---------------------------------------------------------------------------------------------
def make_reader_files(root: Path, n: int, pku_frames: int = 3000, ntu_frames: int = 300, seed: int = 0):
    """n PKU-MMD skeleton files and n NTU .skeleton files in the release formats at 7 significant digits
    (one or two bodies; the first 5 NTU frames have no body)."""
    from skelcl.data import emit

    rng = np.random.default_rng(seed)
    pku, nt = [], []
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        joints = rng.normal(scale=0.5, size=(pku_frames, 1 + i % 2, 25, 3))
        path = root / f"{i:04d}-L.txt"
        emit.write_pku_skeleton(path, joints, digits=7, leading_space=i % 3 == 0)
        pku.append(path)
        joints = rng.normal(scale=0.5, size=(ntu_frames, 1 + i % 2, 25, 3))
        joints[:5] = 0  # frames with no body
        name = emit.ntu_name(1, 1 + i % 3, 1 + i, 1, 1 + i)
        nt += emit.emit_ntu(root / "ntu", [(name, joints)], digits=7)
    return pku, nt


def pku_loadtxt(path):
    """The plain reader of a PKU-MMD skeleton file: np.loadtxt -> (T, 2, 25, 3)."""
    return np.loadtxt(path).reshape(-1, 2, 25, 3)


def ntu_loadtxt(path):
    """The plain reader of an NTU .skeleton file: the line structure walked in Python, then one np.loadtxt
    call on all joint lines (the most favourable use of loadtxt: the file mixes 1-, 10- and 12-value
    lines). Returns (joints (rows, 25, 3), body ids)."""
    lines = Path(path).read_text().splitlines()
    i, starts, ids = 1, [], []
    for _ in range(int(lines[0])):
        nb = int(lines[i])
        i += 1
        for _ in range(nb):
            ids.append(lines[i].split()[0])
            nj = int(lines[i + 1])
            starts.append(i + 2)
            i += 2 + nj
    rows = [lines[s + k] for s in starts for k in range(25)]
    return np.loadtxt(rows).reshape(-1, 25, 12)[:, :, :3], ids


def _reader_case(name, quick, workdir, ours, plain):
    n = 2 if quick else 8
    pku, nt = make_reader_files(Path(workdir) / f"readers_{n}", n, pku_frames=300 if quick else 3000)
    files = pku if name == "read_pku" else nt
    mb = sum(f.stat().st_size for f in files) / 1e6
    ours(files[0]), plain(files[0])  # numba compilation out of the timings

    def each(fn):
        return lambda: [fn(f) for f in files]

    return Case(
        name,
        "MB/s",
        {"np.loadtxt": each(plain), "ours": each(ours)},
        plain={"ours": "np.loadtxt"},
        items={"np.loadtxt": mb, "ours": mb},
        params={"files": n, "megabytes": round(mb, 2)},
        rounds=3 if quick else 5,
    )


def case_read_pku(quick, device, workdir):
    from skelcl.data import pkummd

    return _reader_case("read_pku", quick, workdir, pkummd.read_skeleton, pku_loadtxt)


def case_read_ntu(quick, device, workdir):
    from skelcl.data import ntu

    return _reader_case("read_ntu", quick, workdir, ntu.read_skeleton, ntu_loadtxt)


# -- augmentation ----------------------------------------------------------------------------------------
def case_augment(quick, device, workdir):
    """sample() + apply() of the full aimclr recipe (3 views of 150 frames from 300-frame sequences, 2
    bodies): the NumPy per-sample reference, numba (all threads and one), DALI-CPU when importable."""
    import numba

    import skelcl.augment as aug

    batch, ref_batch, T = (8, 2, 300) if quick else (128, 32, 300)
    recipe = aug.load_recipe("aimclr")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, T, 2, 25, 3)).astype(np.float32)
    lengths = np.full(batch, T)

    def step(backend, n, threads=None):
        def run():
            params = aug.sample(recipe, lengths[:n], rng)
            if threads is None:
                aug.apply(x[:n], lengths[:n], params, backend=backend)
                return
            old = numba.get_num_threads()
            numba.set_num_threads(threads)
            try:
                aug.apply(x[:n], lengths[:n], params, backend=backend)
            finally:
                numba.set_num_threads(old)

        return run

    variants = {"numpy": step("numpy", ref_batch), "numba": step("numba", batch)}
    items = {"numpy": ref_batch, "numba": batch}
    if numba.get_num_threads() > 1:
        variants["numba_1thread"], items["numba_1thread"] = step("numba", batch, 1), batch
    try:
        import nvidia.dali  # noqa: F401

        dali = not quick
    except ImportError:
        dali = False
    if dali:
        variants["dali"], items["dali"] = step("dali", batch), batch
    variants["numba"]()  # compile or load the numba cache before the warm-up round
    return Case(
        "augment",
        "sequences/s",
        variants,
        plain={k: "numpy" for k in variants if k != "numpy"},
        items=items,
        params={
            "batch": batch,
            "numpy_batch": ref_batch,
            "frames": T,
            "recipe": "aimclr",
            "numba_threads": numba.get_num_threads(),
            "dali": dali,
        },
        rounds=3 if quick else 9,
    )


# -- evaluation ------------------------------------------------------------------------------------------
def make_eval_case(videos=1000, gt_per_video=20, classes=51, preds=100_000, pred_classes=None, seed=0):
    """(ground truth, predictions) by video: ground truth spread over `classes`; predictions jittered copies
    of it (80 % right class) with two-decimal scores (many ties). pred_classes=k puts every prediction of a
    video into k classes only, so (video, class) groups hold many predictions."""
    from skelcl.eval import Segment

    rng = np.random.default_rng(seed)
    gt, pred = {}, {}
    per_video = preds // videos
    for v in range(videos):
        name = f"{v:05d}"
        starts = np.sort(rng.uniform(0, 9000, gt_per_video))
        lengths = rng.uniform(20, 300, gt_per_video)
        labels = rng.integers(0, classes, gt_per_video)
        if pred_classes is not None:
            labels = rng.choice(rng.choice(classes, pred_classes, replace=False), gt_per_video)
        gt[name] = [Segment(int(c), float(s), float(s + n)) for c, s, n in zip(labels, starts, lengths)]
        pick = rng.integers(0, gt_per_video, per_video)
        jitter = rng.normal(0, 0.2, (per_video, 2)) * lengths[pick, None]
        wrong = rng.random(per_video) < 0.2
        p_lab = np.where(wrong, rng.choice(np.unique(labels), per_video), labels[pick])
        p_s = starts[pick] + jitter[:, 0]
        p_e = np.maximum(starts[pick] + lengths[pick] + jitter[:, 1], p_s + 1)
        score = np.round(rng.random(per_video), 2)
        pred[name] = [
            Segment(int(c), float(a), float(b), float(p)) for c, a, b, p in zip(p_lab, p_s, p_e, score)
        ]
    return gt, pred


def case_evaluate(quick, device, workdir):
    """Detection mAP over BABEL's 7 thresholds: vectorized against the per-group loop reference."""
    from skelcl.eval import PROTOCOLS, detection_map
    from skelcl.eval.reference import detection_map_reference

    videos, preds = (40, 2000) if quick else (300, 30_000)
    gt, pred = make_eval_case(videos=videos, preds=preds)
    th = PROTOCOLS["babel"][0]
    fast, ref = detection_map(gt, pred, th, num_classes=51), detection_map_reference(gt, pred, th)
    assert np.allclose(fast["AP"], ref["AP"], rtol=0, atol=1e-12)
    return Case(
        "evaluate",
        "ms",
        {
            "reference_loops": lambda: detection_map_reference(gt, pred, th),
            "detection_map": lambda: detection_map(gt, pred, th, num_classes=51),
        },
        plain={"detection_map": "reference_loops"},
        params={"videos": videos, "predictions": preds, "classes": 51, "thresholds": len(th)},
        rounds=3 if quick else 5,
    )


# -- models ----------------------------------------------------------------------------------------------
def backbone_sizes(quick, device):
    """(batch, frames, bodies, width): the demo's pretraining step on a CPU (batch 32, 150-frame views, one
    body, width 0.25), the full-scale one on a GPU (batch 128, two bodies, width 1.0)."""
    if quick:
        return 2, 32, 1, 0.125
    return (128, 150, 2, 1.0) if str(device).startswith("cuda") else (32, 150, 1, 0.25)


class BackboneWorker:
    """A configuration stepped in its own process (default module: skelcl.benchmark.backbone_worker):
    calling the object runs one step there (one forward + backward) and waits for it."""

    def __init__(self, args: list[str], env: dict | None = None, module="skelcl.benchmark.backbone_worker"):
        import subprocess
        import sys

        self.args = args
        environ = dict(os.environ)
        for key, value in (env or {}).items():  # None: unset in the worker
            if value is None:
                environ.pop(key, None)
            else:
                environ[key] = value
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ,
        )  # fmt: skip

    def _expect(self, word):
        line = self.proc.stdout.readline().strip()
        if line != word:
            self.proc.kill()
            err = self.proc.stderr.read()[-2000:]
            raise RuntimeError(f"benchmark worker {' '.join(self.args)} failed (got {line!r}):\n{err}")

    def ready(self):
        self._expect("ready")

    def send(self):
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()

    def __call__(self):
        self.send()
        self._expect("ok")

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)

    def kill(self):
        self.proc.kill()


def _all_ready(workers: dict):
    """Wait until every worker (or RankGroup) is ready, killing all of them if one fails; returns the
    callable that closes them all once the case is measured."""
    try:
        for w in workers.values():
            w.ready()
    except Exception:
        for w in workers.values():
            w.kill()
        raise

    def close():
        for w in workers.values():
            w.close()

    return close


# label -> (path, malloc, amp, compile): the CPU variants of the backbone case. "eager" is the path as it
# was before the CPU fast path (frames-major reference graph conv, glibc's default allocator settings).
CPU_BACKBONE_VARIANTS = {
    "eager": ("frames", "default", "fp32", False),
    "joints_major": ("joints", "default", "fp32", False),
    "tuned_malloc": ("frames", "tuned", "fp32", False),
    "cpu_fast_path": ("joints", "tuned", "fp32", False),
    "cpu_fast_path_bf16": ("joints", "tuned", "bf16", False),
    "cpu_fast_path_compile": ("joints", "tuned", "fp32", True),
}


def case_backbone(quick, device, workdir, compile_: bool | None = None):
    """Backbone forward + backward (ST-GCN, 10 layers, strides 2/5/8).

    CPU: each variant in its own worker process (the allocator setting is per process), all against
    "eager", the path before the CPU fast path: frames-major with the plain PyTorch graph convolution and
    glibc's default allocator settings. joints_major: the joints-major layout alone (graph_conv_ncvt);
    tuned_malloc: the allocator setting alone; cpu_fast_path: both (what training on a CPU runs);
    cpu_fast_path_bf16: that under CPU bf16 autocast (train.cpu_amp; fast only on CPUs with AVX512-BF16
    or AMX); cpu_fast_path_compile: torch.compile on top (full runs; minutes to compile).
    CUDA: eager, the Triton graph conv, the joints-major layout (cuDNN 1x1 convolutions), bf16 autocast and
    torch.compile, in this process."""
    import torch

    B, T, M, width = backbone_sizes(quick, device)
    cuda = str(device).startswith("cuda")
    compile_ = (not quick) if compile_ is None else compile_
    params = {"batch": B, "frames": T, "bodies": M, "width": width, "device": str(device),
              "threads": torch.get_num_threads()}  # fmt: skip
    if not cuda:
        size = ["--batch", str(B), "--frames", str(T), "--bodies", str(M), "--width", str(width),
                "--threads", str(torch.get_num_threads())]  # fmt: skip
        workers = {}
        for label, (path, malloc, amp, comp) in CPU_BACKBONE_VARIANTS.items():
            if comp and not compile_:
                continue
            extra = ["--compile"] if comp else []
            workers[label] = BackboneWorker(["--path", path, "--malloc", malloc, "--amp", amp, *extra, *size])
        close = _all_ready(workers)  # they warm up (and compile) side by side
        return Case(
            "backbone",
            "sequences/s",
            dict(workers),
            plain={k: "eager" for k in workers if k != "eager"},
            items={k: B for k in workers},
            params=params,
            rounds=3 if quick else 9,
            close=close,
        )

    torch.manual_seed(0)
    x = torch.randn(B, T, M, 25, 3, device=device)
    models = {}

    def model(label):
        if label not in models:
            from skelcl.models import Backbone

            torch.manual_seed(0)
            models[label] = Backbone("stgcn", width, (2, 5, 8)).to(device)
        return models[label]

    def step(label, graph_conv="reference", bf16=False, compiled=False):
        m = model(label)
        if compiled and not getattr(m, "_skelcl_compiled", False):
            m.compile()
            m._skelcl_compiled = True

        def run():
            old = os.environ.get("SKELCL_GRAPH_CONV")
            os.environ["SKELCL_GRAPH_CONV"] = graph_conv
            try:
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
                    out, _ = m(x)
                out.float().square().mean().backward()
            finally:
                if old is None:
                    os.environ.pop("SKELCL_GRAPH_CONV")
                else:
                    os.environ["SKELCL_GRAPH_CONV"] = old
            m.zero_grad(set_to_none=True)

        return run

    variants = {"eager": step("eager")}
    variants["triton"] = step("triton", graph_conv="auto")
    variants["joints_major"] = step("joints_major", graph_conv="ncvt")  # the CPU fast path's layout (cuDNN)
    variants["eager_bf16"] = step("eager_bf16", bf16=True)
    variants["triton_bf16"] = step("triton_bf16", graph_conv="auto", bf16=True)
    variants["joints_major_bf16"] = step("joints_major_bf16", graph_conv="ncvt", bf16=True)
    if compile_:
        variants["compile"] = step("compile", compiled=True)
        variants["triton_bf16_compile"] = step("triton_bf16_compile", "auto", bf16=True, compiled=True)
    for run in variants.values():  # compile outside the timed rounds
        run()
    return Case(
        "backbone",
        "sequences/s",
        variants,
        plain={k: "eager" for k in variants if k != "eager"},
        items={k: B for k in variants},
        sync=_sync(device),
        params=params,
        rounds=3 if quick else 7,
    )


def backbone_flops(batch, frames, bodies, width, strides, joints=25, partitions=3, kernel=9):
    """(forward, forward + backward) FLOP of the ST-GCN backbone (2 per multiply-add), counted per layer
    from the matrix products: graph conv joint mix 2 K V^2 T C_in and channel mix 2 K V T C_in C_out per
    sample, temporal conv 2 V T' 9 C_out^2, residual 1x1 conv 2 V T' C_in C_out (BatchNorm, ReLU and
    additions not counted). Backward: every product twice (input and weight gradient), except the joint
    mix (a fixed adjacency: input gradient only). Agrees with torch.utils.flop_counter on the frames-major
    path to 0.1 % (tests/test_bench.py)."""
    from skelcl.models.backbone import layer_channels, layer_lengths

    n, v, k = batch * bodies, joints, partitions
    fwd = bwd = 0
    c_in, t_in = 3, frames
    for i, (c, t) in enumerate(zip(layer_channels(width), layer_lengths(frames, strides))):
        joint = 2 * n * k * v * v * t_in * c_in
        channel = 2 * n * k * v * t_in * c_in * c
        temporal = 2 * n * v * t * kernel * c * c
        residual = 2 * n * v * t * c_in * c if i > 0 and (c_in != c or t != t_in) else 0
        fwd += joint + channel + temporal + residual
        bwd += joint + 2 * (channel + temporal + residual)
        c_in, t_in = c, t
    return fwd, fwd + bwd


# The float32 peak of one core: 2 FMA pipes x 8 lanes (AVX2; 16 with AVX-512) x 2 FLOP per cycle.
def cpu_peak_gflops(cores=None, ghz=None):
    """An estimate of the machine's float32 peak (GFLOP/s): cores x FLOP per cycle x clock, with AVX-512 if
    torch reports it and the clock from /proc/cpuinfo (BogoMIPS / 2 on a VM when no MHz is given)."""
    import torch

    cores = cores or os.cpu_count()
    if ghz is None:
        ghz = 0.0
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                key, _, val = line.partition(":")
                if key.strip() == "cpu MHz":
                    ghz = max(ghz, float(val) / 1e3)
                elif key.strip() == "bogomips" and not ghz:
                    ghz = float(val) / 2e3
        except (OSError, ValueError):
            ghz = 0.0
    lanes = 16 if "AVX512" in torch.backends.cpu.get_cpu_capability() else 8
    return cores * 2 * lanes * 2 * ghz


def case_backbone_w1(quick, device, workdir):
    """Backbone forward + backward at full width on a CPU: ST-GCN width 1.0, batch 16, one body, strides at
    layers 5 and 8, T 64 and T 150 (issue 23's sizes), float32. Each variant in its own worker process:
    eager_T* the old frames-major path (reference graph conv, glibc's default allocator, libgomp's default
    spin-then-sleep wait), cpu_fast_path_T* what training runs (joints-major, allocator setting, passive
    OpenMP wait as skelcl sets it), cpu_fast_path_spin_T* that with libgomp's default wait (what the
    passive wait costs or gains). params give the FLOP of one step
    (backbone_flops) and the machine's estimated float32 peak: GFLOP/s = items/s / batch x GFLOP."""
    import torch

    B, M, width, strides = (2, 1, 0.125, "5,8") if quick else (16, 1, 1.0, "5,8")
    lengths = (16,) if quick else (64, 150)
    params = dict(batch=B, bodies=M, width=width, strides=strides, device="cpu")
    params.update(threads=torch.get_num_threads(), peak_gflops_fp32=round(cpu_peak_gflops(), 1))
    workers, plain = {}, {}
    for T in lengths:
        params[f"gflop_fwd_bwd_T{T}"] = round(backbone_flops(B, T, M, width, (5, 8))[1] / 1e9, 2)
        size = ["--batch", str(B), "--frames", str(T), "--bodies", str(M), "--width", str(width),
                "--threads", str(torch.get_num_threads()), "--strides", strides]  # fmt: skip
        for label, path, malloc, wait in (
            ("eager", "frames", "default", None),
            ("cpu_fast_path", "joints", "tuned", "PASSIVE"),
            ("cpu_fast_path_spin", "joints", "tuned", None),
        ):
            args = ["--path", path, "--malloc", malloc, "--amp", "fp32", *size]
            env = {"OMP_WAIT_POLICY": wait, "SKELCL_OMP_WAIT": "passive" if wait else "default"}
            workers[f"{label}_T{T}"] = BackboneWorker(args, env=env)
            if label != "eager":
                plain[f"{label}_T{T}"] = f"eager_T{T}"
    try:
        for w in workers.values():
            w.ready()
    except Exception:
        for w in workers.values():
            w.proc.kill()
        raise

    def close():
        for w in workers.values():
            w.close()

    return Case(
        "backbone_w1",
        "sequences/s",
        dict(workers),
        plain=plain,
        items={k: B for k in workers},
        params=params,
        rounds=3 if quick else 7,
        close=close,
    )


def case_infonce(quick, device, workdir):
    """InfoNCE forward + backward with a queue: a dense eager loss (the whole M x (N + Q) logit matrix)
    against skelcl.kernels.info_nce (info_nce_cpu on a CPU, the Triton kernel on a GPU) and, on a CPU,
    the chunked info_nce_reference (the CPU path before info_nce_cpu)."""
    import torch
    import torch.nn.functional as F

    from skelcl.kernels import info_nce, info_nce_reference

    m, nq, d = (128, 1024, 128) if quick else (1024, 16384, 128)
    g = torch.Generator(device="cpu").manual_seed(0)
    q = F.normalize(torch.randn(m, d, generator=g), dim=1).to(device).requires_grad_()
    k = F.normalize(torch.randn(m, d, generator=g), dim=1).to(device).requires_grad_()
    queue = F.normalize(torch.randn(nq, d, generator=g), dim=1).to(device)
    tau = 0.07

    def dense():
        logits = q @ torch.cat([k, queue]).t() / tau
        F.cross_entropy(logits, torch.arange(m, device=logits.device)).backward()

    def kernel():
        info_nce(q, k, queue, temperature=tau).backward()

    variants = {"dense_eager": dense, "info_nce": kernel}
    if not str(device).startswith("cuda"):  # the chunked CPU path before info_nce_cpu

        def chunked():
            info_nce_reference(q, k, queue, temperature=tau).backward()

        variants["info_nce_reference"] = chunked
    return Case(
        "infonce",
        "ms",
        variants,
        plain={v: "dense_eager" for v in variants if v != "dense_eager"},
        sync=_sync(device),
        params={"queries": m, "keys": m, "queue": nq, "dim": d},
        rounds=3 if quick else 7,
    )


# -- training steps --------------------------------------------------------------------------------------
PHASES = ("data", "forward", "backward", "optimizer")


def step_settings(quick, device):
    """Pretraining step sizes: the demo's on a CPU (width 0.25, batch 32, one body, queues 256 / 4,096);
    full scale on a GPU (width 1.0, batch 128, two bodies, queues 32,768 / 65,536, bf16)."""
    if quick:
        return dict(width=0.125, batch=2, bodies=1, queue=16, squeue=64, sequences=16, steps=1)
    if str(device).startswith("cuda"):
        return dict(width=1.0, batch=128, bodies=2, queue=32768, squeue=65536, sequences=256, steps=4)
    return dict(width=0.25, batch=32, bodies=1, queue=256, squeue=4096, sequences=96, steps=3)


class PretrainVariant:
    """One pretraining step as skelcl.train.pretrain runs it (batch -> numba augmentation -> MoCo forward
    -> backward -> SGD -> queues), timed by phase; with prefetch the batch comes from a background thread
    and the data phase is the time spent waiting for it. `moco` overrides the MoCo arguments (default:
    SkeletonCLR with the aligned snippet loss, as in the demo); the recipe is the method's."""

    def __init__(self, store, s, device, prefetch=False, recipe=None, env=None, time_snippet=False, rank=0,
                 world=1, **moco):  # fmt: skip
        import torch

        from skelcl import augment
        from skelcl.models import MoCo
        from skelcl.train.data import Prefetcher, pretrain_feed
        from skelcl.train.distributed import wrap

        torch.manual_seed(0)
        self.device, self.store, self.s = torch.device(device), store, s
        kw = dict(
            method="skeletonclr",
            snippet=True,
            match="aligned",
            exclude_same_video=False,
            momentum=0.99,
            nn_warmup_epochs=0,
            queue_size=s["queue"],
            snippet_queue_size=s["squeue"],
        )
        kw.update(moco)
        backbone = dict(kind="stgcn", width=s["width"], strides=(2, 5, 8))
        self.model = MoCo(backbone, **kw).to(device)
        self.ddp = wrap(self.model, self.device)  # the model itself in one process, DDP across ranks
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
        recipe = augment.load_recipe(recipe or kw["method"])
        n = len(store)
        # s["batch"] per rank: rank r takes positions r, r + world, ... of the step's world * batch draws
        per_step = s["batch"] * world
        draws = [np.random.default_rng([0, i]).choice(n, per_step, replace=False) for i in range(64)]
        self.batches = [d[rank::world] for d in draws]
        S = self.model.num_snippets if self.model.snippet else 0
        key_view = getattr(self.model, "snippet_key_view", 1)
        feed = pretrain_feed(
            store, self.batches, recipe, 0, 0, "numba", S, device, prefetch=prefetch, key_view=key_view
        )
        make = feed.make  # step i -> batch i mod 64: an endless stream
        self.feed = Prefetcher(lambda i: (i % 64, make(i % 64)), 1 << 40, prefetch, None)
        self.it = iter(self.feed)
        self.sync = _sync(device) or (lambda: None)
        self.amp = self.device.type == "cuda"
        self.env = dict(env or {})
        self.snip = None
        if time_snippet and self.model.snippet:
            self.snip = {}
            self._time_snippet()

    def _time_snippet(self):
        """Time the snippet loss inside the step: its forward (heads, matching, InfoNCE), the backward of its
        InfoNCE (from the gradient reaching the loss to the gradient reaching the query snippets: the engine
        runs these nodes first, they were created last) and the snippet queue's update."""
        from skelcl.models import moco as moco_mod

        model, snip = self.model, self.snip
        inner, nce, enqueue = model._snippet_loss, moco_mod.snippet_info_nce, model.squeue.enqueue

        def mark(key):
            def hook(g):
                snip[key] = time.perf_counter()

            return hook

        def timed_nce(zq, *a, **kw):
            if zq.requires_grad:
                zq.register_hook(mark("bwd_end"))
            t0 = time.perf_counter()
            out = nce(zq, *a, **kw)
            snip["infonce"] = time.perf_counter() - t0
            return out

        def timed_loss(*a, **kw):
            t0 = time.perf_counter()
            moco_mod.snippet_info_nce = timed_nce
            try:
                loss = inner(*a, **kw)
            finally:
                moco_mod.snippet_info_nce = nce
            snip["forward"] = time.perf_counter() - t0
            if loss.requires_grad:
                loss.register_hook(mark("bwd_start"))
            return loss

        def timed_enqueue(*a, **kw):
            t0 = time.perf_counter()
            enqueue(*a, **kw)
            snip["queue"] = time.perf_counter() - t0

        model._snippet_loss = timed_loss
        model.squeue.enqueue = timed_enqueue

    def fill_queues(self, videos: int, seed: int = 0):
        """Fill both queues with unit rows from `videos` video ids (each id on consecutive rows, the global
        queue one row and the snippet queue S rows per video and pass), as after their first pass."""
        import torch
        import torch.nn.functional as F

        g = torch.Generator().manual_seed(seed)
        S = self.model.num_snippets
        for rq, per in ((self.model.queue, 1), (self.model.squeue, S)):
            if rq.size == 0:
                continue
            rows = torch.arange(rq.size)
            rq.data.copy_(F.normalize(torch.randn(rq.data.shape, generator=g), dim=1).to(rq.data.dtype))
            rq.group.copy_((rows // per) % videos)
            rq.time.copy_(rows % per if per > 1 else torch.full_like(rows, -1))
            rq.filled.fill_(rq.size)
            rq.ptr.zero_()

    def __call__(self):
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            return self._step()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def _step(self):
        import torch

        from skelcl.train.data import to_device

        if self.amp:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        i, (views, align) = next(self.it)
        views, align = to_device((views, align), self.device)
        video = torch.as_tensor(self.batches[i], dtype=torch.long, device=self.device)  # ids, as in training
        self.sync()
        t1 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            loss, _ = self.ddp(views, epoch=1, align=align, video=video)
        self.sync()
        t2 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.sync()
        t3 = time.perf_counter()
        self.opt.step()
        self.model.flush_queues()
        self.sync()
        t4 = time.perf_counter()
        out = {"data": t1 - t0, "forward": t2 - t1, "backward": t3 - t2, "optimizer": t4 - t3}
        if self.snip is not None:
            sn = self.snip
            out["snippet_forward"] = sn.get("forward", 0.0)
            out["snippet_infonce_forward"] = sn.get("infonce", 0.0)
            out["snippet_infonce_backward"] = max(0.0, sn.get("bwd_end", 0.0) - sn.get("bwd_start", 0.0))
            out["snippet_queue"] = sn.get("queue", 0.0)
            sn.clear()
        if self.amp:
            out["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        return out


def _steps(step, k):
    """A callable running k steps; returns the mean phase seconds per step (peak memory: the maximum)."""

    def run():
        times = [step() for _ in range(k)]
        out = {p: sum(t[p] for t in times) / k for p in times[0] if not p.endswith("_gib")}
        if "peak_gib" in times[0]:
            out["peak_gib"] = max(t["peak_gib"] for t in times)
        return out

    return run


def case_pretrain_step(quick, device, workdir):
    """One pretraining step (SkeletonCLR, aligned snippet loss as in the demo) by phase, with and without
    the snippet loss, with and without prefetching the next batch; on a GPU also with a 1,048,576-row
    snippet queue, and the peak memory of a step."""
    from skelcl.data import open_cache
    from skelcl.train.data import SequenceStore

    s = step_settings(quick, device)
    store = SequenceStore(open_cache(_cache(workdir, s["sequences"])), s["bodies"])
    for i in range(len(store)):
        store.get(i)  # normalized once, as after the first epoch of training
    variants, plain = {}, {}
    for snippet in (False, True):
        base = "skeletonclr+snippet" if snippet else "skeletonclr"
        for prefetch in (False, True):
            label = base + ("+prefetch" if prefetch else "")
            step = PretrainVariant(store, s, device, prefetch, snippet=snippet)

            variants[label] = _steps(step, s["steps"])
        plain[base + "+prefetch"] = base
    plain["skeletonclr+snippet"] = "skeletonclr"
    if str(device).startswith("cuda") and not quick:  # the largest snippet queue of the targets
        big = dict(s, squeue=1 << 20)
        variants["skeletonclr+snippet+prefetch+squeue1M"] = _steps(
            PretrainVariant(store, big, device, True, snippet=True), s["steps"]
        )
        plain["skeletonclr+snippet+prefetch+squeue1M"] = "skeletonclr+snippet+prefetch"
    for run in variants.values():
        run()  # numba, allocator, queues filled
    return Case(
        "pretrain_step",
        "sequences/s",
        variants,
        plain=plain,
        items={k: s["batch"] * s["steps"] for k in variants},
        sync=_sync(device),
        params={**s, "device": str(device), "match": "aligned"},
        rounds=2 if quick else 5,
    )


def _filled_store(workdir, sequences, bodies):
    from skelcl.data import open_cache
    from skelcl.train.data import SequenceStore

    store = SequenceStore(open_cache(_cache(workdir, sequences)), bodies)
    for i in range(len(store)):
        store.get(i)  # normalized once, as after the first epoch of training
    return store


def case_snippet_share(quick, device, workdir):
    """The snippet loss's share of a CPU pretraining step at issue 23's sizes: SkeletonCLR + aligned snippet
    loss, width 0.25, batch 32, one body, 150-frame views, 19 snippets, queues 32,768 / 65,536 (filled),
    float32, no prefetch. snippet: info_nce's CPU fast path (info_nce_cpu); snippet_reference: the chunked
    reference (SKELCL_INFONCE=reference, the path before it); no_snippet: the step without the snippet
    loss. The snippet variants report the snippet loss's parts per step (phases snippet_forward: heads,
    matching and InfoNCE forward; snippet_infonce_forward / _backward; snippet_queue: the queue update)
    and snippet_share, their sum over the step's compute (forward + backward + optimizer)."""
    s = dict(width=0.25, batch=32, bodies=1, queue=32768, squeue=65536, sequences=96, steps=2)
    if quick:
        s = dict(width=0.125, batch=2, bodies=1, queue=64, squeue=256, sequences=16, steps=1)
    store = _filled_store(workdir, s["sequences"], s["bodies"])
    variants = {}
    for label, snippet, env in (
        ("no_snippet", False, {}),
        ("snippet_reference", True, {"SKELCL_INFONCE": "reference"}),
        ("snippet", True, {"SKELCL_INFONCE": "auto"}),
    ):
        step = PretrainVariant(store, s, device, False, env=env, time_snippet=snippet, snippet=snippet,
                               exclude_same_video=True)  # fmt: skip
        step.fill_queues(len(store))
        variants[label] = _steps(step, s["steps"])
    for run in variants.values():
        run()
    return Case(
        "snippet_share",
        "sequences/s",
        variants,
        plain={"snippet": "snippet_reference"},
        items={k: s["batch"] * s["steps"] for k in variants},
        params={**s, "device": "cpu", "method": "skeletonclr", "match": "aligned", "snippets": 19},
        rounds=2 if quick else 5,
    )


def case_demo_step(quick, device, workdir):
    """The demo's pretraining step (skelcl/configs/demo.yaml): RVTCLR + aligned snippet loss, ST-GCN width
    0.25, strides 2/5/8, batch 32, one body, 150-frame views, momentum 0.99, queues of one epoch of the
    demo's ~240 training sequences (240 / 4,560 rows, filled), own-video rows left out, prefetch, float32.
    demo_step: today's code; demo_step_reference: the same with SKELCL_INFONCE=reference (the chunked
    InfoNCE the demo ran before info_nce_cpu)."""
    s = dict(width=0.25, batch=32, bodies=1, queue=240, squeue=240 * 19, sequences=96, steps=2)
    if quick:
        s = dict(width=0.125, batch=2, bodies=1, queue=16, squeue=64, sequences=16, steps=1)
    store = _filled_store(workdir, s["sequences"], s["bodies"])
    variants = {}
    for label, env in (("demo_step_reference", {"SKELCL_INFONCE": "reference"}), ("demo_step", {})):
        step = PretrainVariant(store, s, device, True, env=env, method="rvtclr", exclude_same_video=True)
        step.fill_queues(s["queue"])
        variants[label] = _steps(step, s["steps"])
    for run in variants.values():
        run()
    return Case(
        "demo_step",
        "sequences/s",
        variants,
        plain={"demo_step": "demo_step_reference"},
        items={k: s["batch"] * s["steps"] for k in variants},
        params={**s, "device": "cpu", "method": "rvtclr", "match": "aligned", "prefetch": True},
        rounds=2 if quick else 5,
    )


class RankGroup:
    """The ranks of one data-parallel configuration (skelcl.benchmark.pretrain_worker processes): calling
    the object starts one step on every rank and waits until all have finished it."""

    def __init__(self, workers: list):
        self.workers = workers

    def ready(self):
        for w in self.workers:
            w.ready()

    def __call__(self):
        for w in self.workers:
            w.send()
        for w in self.workers:
            w._expect("ok")

    def close(self):
        for w in self.workers:
            w.close()

    def kill(self):
        for w in self.workers:
            w.kill()


def case_demo_ranks(quick, device, workdir):
    """The demo's pretraining step (sizes as demo_step) over the two cores three ways, each in its own
    processes, rounds interleaved: demo_step_reference (one process x 2 threads, the chunked reference
    InfoNCE: the step before the CPU work of this case's issue), demo_step (one process x 2 threads, today's
    code) and demo_step_2ranks (two gloo ranks x 1 thread, 16 sequences each: the same global batch of 32,
    DDP-averaged gradients, keys gathered across ranks; BatchNorm statistics per rank of 16). Where the two
    ranks' time goes: demo_step_1thread (one process x 1 thread, batch 32) and demo_step_2solo (the two
    ranks' halves in two processes that join no process group: their compute without the communication)."""
    import socket

    s = dict(width=0.25, batch=32, bodies=1, queue=240, squeue=240 * 19, sequences=96)
    if quick:
        s = dict(width=0.125, batch=4, bodies=1, queue=16, squeue=64, sequences=16)
    _filled_store(workdir, s["sequences"], s["bodies"])  # the cache, made once before the workers read it
    threads = max(2, os.cpu_count() or 1) if not quick else 2

    def port():
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    def group(world, reference=False, solo=False, nthreads=None):
        args = ["--workdir", str(workdir), "--sequences", str(s["sequences"]), "--bodies", str(s["bodies"]),
                "--width", str(s["width"]), "--batch", str(s["batch"] // world), "--queue", str(s["queue"]),
                "--squeue", str(s["squeue"]), "--threads", str(nthreads or max(1, threads // world)),
                "--world", str(world), "--port", str(port())]  # fmt: skip
        args += ["--reference"] * reference + ["--solo"] * solo
        mod = "skelcl.benchmark.pretrain_worker"
        return RankGroup([BackboneWorker(args + ["--rank", str(r)], module=mod) for r in range(world)])

    groups = {"demo_step_reference": group(1, True), "demo_step": group(1), "demo_step_2ranks": group(2)}
    if not quick:  # where the two ranks' time goes
        groups.update(demo_step_1thread=group(1, nthreads=1), demo_step_2solo=group(2, solo=True))
    close = _all_ready(groups)
    return Case(
        "demo_ranks",
        "sequences/s",
        dict(groups),
        plain={k: "demo_step_reference" for k in groups if k != "demo_step_reference"},
        items={k: s["batch"] for k in groups},
        params={**s, "device": "cpu", "method": "rvtclr", "match": "aligned", "threads": threads},
        rounds=3 if quick else 7,
        close=close,
    )


def case_finetune_step(quick, device, workdir):
    """One fine-tuning step (Localizer with the U-shaped fusion head, whole sequences up to 1,000 frames,
    finetune recipe), with and without prefetching the next batch."""
    import torch
    import torch.nn.functional as F

    from skelcl.data import open_cache
    from skelcl.models import Backbone, Localizer
    from skelcl.train.data import Prefetcher, SequenceStore, finetune_feed

    width, batch, n, k = (0.125, 2, 16, 1) if quick else (0.25, 8, 96, 3)
    cache = open_cache(_cache(workdir, n))
    store = SequenceStore(cache, 1)
    for i in range(len(store)):
        store.get(i)
    from skelcl import augment

    recipe = augment.load_recipe("finetune")
    C = cache.num_classes
    batches = [np.random.default_rng([1, i]).choice(n, batch, replace=False) for i in range(64)]
    variants = {}
    for prefetch in (False, True):
        torch.manual_seed(0)
        model = Localizer(Backbone("stgcn", width, (2, 5, 8)), C).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        make = finetune_feed(store, batches, recipe, 0, 0, "numba", 1000, device, prefetch).make
        it = iter(Prefetcher(lambda i, make=make: make(i % 64), 1 << 40, prefetch, device))
        sync = _sync(device) or (lambda: None)

        def run(model=model, opt=opt, it=it, sync=sync):
            wait = 0.0
            for _ in range(k):
                t0 = time.perf_counter()
                view, y = next(it)
                wait += time.perf_counter() - t0
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=str(device).startswith("cuda")):
                    logits = model(view)
                loss = F.cross_entropy(logits.float().reshape(-1, C), y.reshape(-1), ignore_index=-1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sync()
            return {"data": wait / k}

        variants["finetune" + ("+prefetch" if prefetch else "")] = run
    for run in variants.values():
        run()
    return Case(
        "finetune_step",
        "sequences/s",
        variants,
        plain={"finetune+prefetch": "finetune"},
        items={kk: batch * k for kk in variants},
        sync=_sync(device),
        params={"width": width, "batch": batch, "steps": k, "max_frames": 1000, "device": str(device)},
        rounds=2 if quick else 5,
    )


BUILDERS = {name: globals()[f"case_{name}"] for name in CPU_CASES}


def build(name: str, quick: bool, device: str = "cpu", workdir=None) -> Case:
    """The case `name` (one of CPU_CASES) at quick or full size on device; data files go to workdir."""
    import tempfile

    if name not in BUILDERS:
        raise KeyError(f"unknown benchmark case {name!r} (known: {', '.join(BUILDERS)})")
    workdir = workdir or tempfile.mkdtemp(prefix="skelcl-bench-")
    return BUILDERS[name](quick, device, workdir)
