"""Contrastive pretraining (MoCo: SkeletonCLR or AimCLR-style, optionally + the snippet loss).

run_pretrain(cfg, out) trains on the sequences of cfg.data (labels unused), writes the run directory
(skelcl.train.run) and returns the final metrics. Each step: a batch of normalized sequences ->
skelcl.augment views (query, key = the other tempo, extreme for AimCLR) -> MoCo loss -> SGD step ->
queues take the keys. Resuming from RUN/last.pt (saved after every `train.ckpt_every` epochs) restores the
model (with its queues and momentum encoder), optimizer, scheduler, history and torch RNG state; data
order and augmentation are functions of (seed, epoch, step), so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import math
import time

import torch

from skelcl import augment
from skelcl.data import open_cache
from skelcl.errors import SkelclError
from skelcl.models import MoCo
from skelcl.models.moco import resolve_queue_sizes
from skelcl.train import checkpoint
from skelcl.train.config import validate
from skelcl.train.data import SequenceStore, epoch_batches, pretrain_feed
from skelcl.train.distributed import barrier, is_main, mean_scalar, setup, unwrap, world_info, wrap
from skelcl.train.malloc import keep_freed_memory
from skelcl.train.preempt import StepClock, check_sequences, preempted, restores_signals
from skelcl.train.probe import make_probe
from skelcl.train.run import (
    RunDir,
    autocast,
    check_out,
    compile_modules,
    make_optimizer,
    make_scheduler,
    resume_state,
    rng_state,
    set_threads,
)

LOGGED = ("loss", "snippet", "queue_own", "squeue_own")  # stats written to run.log each epoch


def backbone_config(model_cfg: dict) -> dict:
    return {
        "kind": model_cfg["backbone"],
        "width": float(model_cfg["width"]),
        "strides": tuple(model_cfg["strides"]),
    }


# pretrain.* keys read by the training loop, not by MoCo
RUN_KEYS = ("recipe", "momentum_schedule", "probe_every", "probe_part", "probe_sequences")


def momentum_at(step: int, p: dict, total_steps: int) -> float:
    """The key-encoder momentum m of optimizer step `step` (0-based; the step's forward first sets
    theta_k <- m theta_k + (1 - m) theta_q), with m0 = pretrain.momentum, T = total_steps:

        constant  m0 (MoCo)
        cosine    1 - (1 - m0) (1 + cos(pi step / T)) / 2: m0 rising to 1 at the end (BYOL)
        ramp      min(m0, step / (step + 1)): the key encoder is the plain mean of the query encoder's
                  iterates until step 1 / (1 - m0) - 1, an EMA with m0 after (the default)

    Why ramp: the key encoder starts as a copy of the random query encoder, and its share left after T
    steps is prod m: with m0 = 0.99 at T = 150 steps, 22 % under constant (0.99^150) and 47 % under
    cosine, but 0.6 % under ramp (1/100 * 0.99^51). At long schedules the three differ only at the start."""
    m0 = float(p["momentum"])
    kind = p.get("momentum_schedule") or "constant"
    if kind == "constant":
        return m0
    if kind == "cosine":
        return 1 - (1 - m0) * (1 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps))) / 2
    if kind == "ramp":
        return min(m0, step / (step + 1))
    raise SkelclError(f"pretrain.momentum_schedule must be constant, cosine or ramp, got {kind!r}")


def build_moco(cfg: dict, keys_per_epoch: int | None = None) -> MoCo:
    """The MoCo model of cfg; queue sizes "auto" are sized to keys_per_epoch (see resolve_queue_sizes)."""
    p = {k: v for k, v in cfg["pretrain"].items() if k not in RUN_KEYS}
    p["queue_size"], p["snippet_queue_size"], _ = resolve_queue_sizes(
        p.get("queue_size", "auto"), p.get("snippet_queue_size", "auto"), keys_per_epoch,
        int(p.get("num_snippets", 19)),
    )  # fmt: skip
    return MoCo(backbone_config(cfg["model"]), **p)


def check_views(p: dict, recipe) -> None:
    """SkelclError unless the recipe gives the views pretrain.method needs (skelcl.models.moco.VIEWS)."""
    from skelcl.models.moco import VIEWS

    need = VIEWS[p["method"]]
    if len(recipe.views) < len(need):
        have = ", ".join(v.name for v in recipe.views)
        raise SkelclError(
            f"pretrain.method {p['method']} needs {len(need)} views ({', '.join(need)}); pretrain.recipe "
            f"{p['recipe']} gives {len(recipe.views)} ({have}): set pretrain.recipe={p['method']}, or leave "
            "pretrain.recipe unset (a method set on the command line brings its recipe)"
        )


def size_warnings(store: SequenceStore, data_cfg: dict, batch_size: int, what: str) -> list[str]:
    """Settings the data cannot honour, with the numbers: a batch larger than the (`what`) training
    sequences, more body slots (data.bodies) than the cache holds."""
    notes, n = [], len(store)
    if batch_size > n:
        notes.append(f"train.batch_size={batch_size} is larger than the {n} {what} sequences: each epoch is "
                     f"one step of all {n}")  # fmt: skip
    want, have = int(data_cfg["bodies"]), int(store.cache.max_bodies)
    if want > have:
        notes.append(f"data.bodies={want}, but {data_cfg['path']} holds at most {have} "
                     f"bod{'y' if have == 1 else 'ies'} per frame: the model gets {have}")  # fmt: skip
    return notes


def open_split(data_cfg: dict, part_key: str = "part"):
    """The cache view named by data.path / data.split / data.<part_key> (split null: every sequence)."""
    if not data_cfg.get("path"):
        raise SkelclError("data.path is not set (give --data DIR or data.path=DIR)")
    cache = open_cache(data_cfg["path"])
    if data_cfg.get("split"):
        cache = cache.subset(cache.split(data_cfg["split"], data_cfg[part_key]))
    if len(cache) == 0:
        raise SkelclError(
            f"{data_cfg['path']}: no sequences in split {data_cfg.get('split')}/{data_cfg[part_key]}"
        )
    return cache


@restores_signals
def run_pretrain(
    cfg: dict,
    out,
    *,
    resume: bool = False,
    stop_after_epochs=None,
    quiet: bool = False,
    overwrite: bool = False,
) -> dict:
    """Checks the config, the data, the recipe and the model before the run folder is created."""
    validate(cfg, "pretrain config")
    t = cfg["train"]
    set_threads(t["num_threads"])
    keep_freed_memory()
    device = setup(t["device"])
    seed = int(t["seed"])
    torch.manual_seed(seed)
    check_out(out, resume, overwrite)
    store = SequenceStore.from_config(open_split(cfg["data"]), cfg["data"])
    recipe = augment.load_recipe(cfg["pretrain"]["recipe"])
    check_views(cfg["pretrain"], recipe)
    bs = int(t["batch_size"])
    # Keys one epoch adds to the queues (all ranks): the queues are sized against it.
    n_batches = len(epoch_batches(len(store), bs, seed, 0, len(store) >= bs))
    keys_per_epoch = n_batches * min(bs, len(store)) * world_info()[1]
    model = build_moco(cfg, keys_per_epoch).to(device)
    compile_modules(t.get("compile", False), model.encoder_q, model.encoder_k)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], t)
    per_epoch = len(epoch_batches(len(store), bs, seed, 0, len(store) >= bs))
    steps_cfg = int(t.get("steps") or 0)  # > 0: a budget of optimizer steps (the last epoch is cut)
    epochs = -(-steps_cfg // per_epoch) if steps_cfg > 0 else int(t["epochs"])
    total_steps = steps_cfg if steps_cfg > 0 else epochs * per_epoch
    scheduler = make_scheduler(optimizer, t, total_steps)  # stepped after every optimizer step
    probe, probe_every = make_probe(cfg, device), int(cfg["pretrain"].get("probe_every") or 0)
    run = RunDir(out, cfg, resume=resume, quiet=quiet, overwrite=overwrite, command="pretrain", device=device)
    start, history = 0, []
    if resume:
        start, history = resume_state(run, "pretrain", model, optimizer, scheduler, device)
        check_sequences(run, len(store))
    ddp = wrap(model, device)
    clock = StepClock(t.get("ckpt_every_steps", 0), t.get("ckpt_every_minutes", 0))

    def state(epoch: int, step: int = 0, partial=None) -> dict:  # step > 0: mid-epoch, partial sums
        return {
            "kind": "pretrain", "config": cfg, "epoch": epoch, "step": step, "partial": partial or {},
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "history": history, "rng": rng_state(),
            "world_size": world_info()[1], "sequences": len(store),
        }  # fmt: skip

    run.log(f"pretrain {cfg['pretrain']['method']}{' + snippet' if model.snippet else ''}: {len(store)} "
            f"sequences, {epochs} epochs = {total_steps} optimizer steps, batch {bs}, device {device}, "
            f"queues {model.queue.size} / {model.squeue.size} rows")  # fmt: skip
    pc = cfg["pretrain"]
    for note in resolve_queue_sizes(pc["queue_size"], pc["snippet_queue_size"], keys_per_epoch,
                                    model.num_snippets)[2]:  # fmt: skip
        run.log(f"warning: {note}")  # printed and written to log.txt once, not also a Python warning
    for note in size_warnings(store, cfg["data"], bs, "training"):
        run.log(f"warning: {note}")
    S = model.num_snippets
    waits = []  # per epoch: share of the time the step loop waited for data
    run.start_epochs(start, epochs)
    for epoch in range(start, epochs):
        model.train()
        t0, lr = time.time(), optimizer.param_groups[0]["lr"]  # lr: that of the epoch's last step
        batches = epoch_batches(len(store), bs, seed, epoch, drop_last=len(store) >= bs)
        batches = batches[: total_steps - epoch * per_epoch]  # the last epoch of a step budget is cut
        first = run.resume_step if epoch == start else 0  # steps of this epoch already done (resume)
        sums: dict[str, float] = dict(run.resume_partial.get("sums", {})) if first else {}
        probed = dict(run.resume_partial.get("probed", {})) if first else {}  # the epoch's last probe
        stop_at_end = False
        # the next batch is read and augmented in a background thread while this one computes
        feed = pretrain_feed(store, batches, recipe, seed, epoch, t["augment_backend"],
                             S if model.snippet else 0, device, t.get("prefetch", True),
                             key_view=model.snippet_key_view, start=first)  # fmt: skip
        bar = run.bar(feed, desc=f"pretrain {epoch + 1}/{epochs}")
        for step, (views, align) in enumerate(bar, start=first):
            video = torch.as_tensor(batches[step], dtype=torch.long, device=device)  # ids: split positions
            gstep = epoch * per_epoch + step  # optimizer steps done before this one
            model.momentum = momentum_at(gstep, cfg["pretrain"], total_steps)
            with autocast(device, t["amp"], t.get("cpu_amp", False)):
                loss, stats = ddp(views, epoch=epoch, align=align, video=video)
            stats["reversed_frames"] = feed.reversed.popleft()  # share of frames playing backwards
            if not torch.isfinite(loss):
                raise SkelclError(f"pretrain: loss became {float(loss)} at epoch {epoch + 1} step {step + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            model.flush_queues()
            if probe is not None and (gstep + 1) % probe_every == 0 and is_main():
                probed = {**probe(model.encoder_q), "probe_step": gstep + 1}
                run.scalars("probe", probed, gstep + 1)
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{stats['loss']:.3f}")
            partial = {"sums": sums, "probed": probed}
            stop_at_end = clock.after_step(run, gstep + 1, epoch, step, len(batches), state, partial)
        wait_share = feed.wait_s / max(time.time() - t0, 1e-9)  # time blocked on the next batch
        waits.append(wait_share)
        run.scalars("time", {"data_wait_share": wait_share}, epoch + 1)
        record = {k: mean_scalar(v / max(1, len(batches))) for k, v in sums.items()}
        record.update(epoch=epoch + 1, steps=epoch * per_epoch + len(batches), lr=lr, momentum=model.momentum,
                      seconds=time.time() - t0, **probed)  # fmt: skip
        history.append(record)
        run.scalars("pretrain", record, epoch + 1)
        run.log_epoch(epoch + 1, ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k.startswith(LOGGED))
                      + f", lr {record['lr']:.4g}, waited for data {100 * wait_share:.1f} %",
                      record["seconds"])  # fmt: skip
        last = epoch + 1 == epochs
        run.save_checkpoint(state(epoch + 1), epoch + 1, last or stop_at_end)
        clock.saved()
        barrier()
        if stop_at_end and not last:
            raise preempted(run)
        if stop_after_epochs is not None and epoch + 1 - start >= stop_after_epochs and not last:
            run.log(f"stopped after epoch {epoch + 1} (stop_after_epochs)")
            run.close()
            return {"history": history, "stopped": True}
    metrics = {"history": history, "final": history[-1] if history else {}}
    metrics["data_wait_share"] = sum(waits) / max(1, len(waits))
    run.write_metrics(metrics)
    run.close()
    unwrap(ddp)
    return metrics


def load_encoder_state(path) -> tuple[dict, dict]:
    """(backbone config, backbone state dict) of the query encoder from a pretraining checkpoint (a file
    or a run directory holding last.pt)."""
    from pathlib import Path

    p = Path(path)
    if p.is_dir():
        p = p / "last.pt"
    st = checkpoint.load(p)
    if st.get("kind") != "pretrain":
        raise SkelclError(f"{p} is not a pretraining checkpoint (kind {st.get('kind')!r})")
    enc = {k[len("encoder_q.") :]: v for k, v in st["model"].items() if k.startswith("encoder_q.")}
    return backbone_config(st["config"]["model"]), enc


__all__ = ["build_moco", "load_encoder_state", "open_split", "run_pretrain"]
