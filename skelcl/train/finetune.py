"""Localization training and evaluation: an encoder (pretrained or random) + a localization head.

Loss: frame-wise cross-entropy over the C+1 classes (background last), frames labeled -1 (padding,
unlabeled) ignored. Protocols (finetune.protocol):

    linear         frozen encoder + ONE per-frame linear layer on the last backbone layer's features,
                   upsampled to frame rate (Linear(C_10 -> C+1) per step, then linear interpolation to T;
                   both are linear, so this is the same as upsampling first): only that layer trains
    frozen_fusion  frozen encoder + the U-shaped fusion head (several conv units), the head trains
    finetune       everything trains; head: finetune.head (ufusion, or simple = the linear layer above)

A frozen encoder keeps its parameters and BatchNorm statistics (it runs in eval mode). A frozen RANDOM
encoder (finetune.pretrained null) is the baseline that tells what the head reaches on untrained features.
finetune.bn_calibrate says which frozen encoders first get their BatchNorm statistics calibrated on the
training sequences (forward passes in train mode without gradient, every BN's running mean/variance = the
average of its batch statistics; no gradient step): "random" (default) the random one only, "all" random
and pretrained alike, "none" neither. label_fraction < 1 keeps labels on a seeded subset of the training
sequences (the others are not used). Budget: train.steps > 0 runs exactly that many optimizer steps
whatever the label fraction (the epochs follow from it, the last one cut short, milestones scaled from
train.epochs); train.steps 0 runs train.epochs epochs. The LR schedule is stepped per optimizer step over
the run's steps, after a linear warm-up over train.warmup of them (skelcl.train.run.lr_factor).
Evaluation: per-frame softmax on the whole test sequences -> proposals (skelcl.eval.proposals_from_scores)
-> detection mAP (evaluate_protocol) and frame metrics (accuracy, edit, F1).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from skelcl import augment
from skelcl.errors import SkelclError
from skelcl.eval import evaluate_protocol, frame_metrics, proposals_from_scores, segments_from_labels
from skelcl.models import Backbone, Localizer
from skelcl.train import checkpoint
from skelcl.train.config import encoder_model, validate
from skelcl.train.data import SequenceStore, epoch_batches, finetune_feed, label_subset, to_tensor
from skelcl.train.distributed import barrier, is_main, mean_scalar, setup, world_info, wrap
from skelcl.train.malloc import keep_freed_memory
from skelcl.train.preempt import StepClock, check_sequences, preempted, restores_signals
from skelcl.train.pretrain import backbone_config, load_encoder_state, open_split, size_warnings
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

PROTOCOLS = ("linear", "frozen_fusion", "finetune")
FROZEN = ("linear", "frozen_fusion")  # protocols with a frozen encoder


def protocol_head(f: dict) -> str:
    """The head a protocol trains: linear -> "simple" (one linear layer), frozen_fusion -> "ufusion",
    finetune -> finetune.head (null: "ufusion"). A head that contradicts the protocol is an error."""
    proto, head = f["protocol"], f.get("head")
    if proto not in PROTOCOLS:
        raise SkelclError(f"finetune.protocol must be one of {', '.join(PROTOCOLS)}, got {proto!r}")
    fixed = {"linear": "simple", "frozen_fusion": "ufusion"}.get(proto)
    if fixed is not None and head not in (None, fixed):
        raise SkelclError(f"finetune.head {head!r} does not fit protocol {proto} (its head is {fixed}; "
                          f"set finetune.head=null or use the other frozen protocol)")  # fmt: skip
    return fixed or head or "ufusion"


def build_localizer(cfg: dict, num_outputs: int) -> tuple[Localizer, dict]:
    """(model, backbone config). With finetune.pretrained the encoder weights come from that run, else
    the encoder is random (model.*). Frozen protocols turn off the encoder's gradients."""
    f = cfg["finetune"]
    head = protocol_head(f)
    if f["pretrained"]:
        bcfg, state = load_encoder_state(f["pretrained"])
        backbone = Backbone(**bcfg)
        backbone.load_state_dict(state)
    else:
        bcfg = backbone_config(cfg["model"])
        backbone = Backbone(**bcfg)
    model = Localizer(backbone, num_outputs, head=head)
    if f["protocol"] in FROZEN:
        for p in model.backbone.parameters():
            p.requires_grad_(False)
    return model, bcfg


def set_train_mode(model: Localizer, protocol: str) -> None:
    model.train()
    if protocol in FROZEN:
        model.backbone.eval()  # frozen: BN statistics stay those of pretraining (or of the calibration)


@torch.no_grad()
def calibrate_bn(module: torch.nn.Module, batches) -> int:
    """Re-estimate the BatchNorm running statistics of `module` from an iterable of inputs: every BN
    layer's running mean and variance become the plain average of its batch statistics over the batches
    (momentum None), from forward passes in train mode without gradient. Parameters do not change; the
    module's mode and the BN momenta are restored. Returns the number of batches."""
    bns = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    was_training = module.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    module.train()
    n = 0
    try:
        for x in batches:
            module(x)
            n += 1
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        module.train(was_training)
    if n == 0:
        raise SkelclError("BatchNorm calibration got no batches")
    return n


def calibrates(f: dict) -> bool:
    """Whether a run's frozen encoder gets its BatchNorm statistics calibrated (finetune.bn_calibrate):
    "random" a frozen random encoder only (a pretrained one keeps its pretraining statistics), "all" every
    frozen encoder, random or pretrained (both then meet the target data the same way), "none" neither.
    A trained encoder (protocol finetune) is never calibrated: training updates its statistics."""
    mode = f.get("bn_calibrate") or "random"
    if f["protocol"] not in FROZEN or mode == "none":
        return False
    return mode == "all" or not f["pretrained"]


CALIBRATION_SEQUENCES = 256  # BatchNorm calibration of a frozen random encoder: at most this many


def calibration_batches(store: SequenceStore, batch_size: int, max_frames: int, seed: int, device):
    """The sequences of `store` once (a seeded subset of CALIBRATION_SEQUENCES when there are more),
    un-augmented, in length order (little padding), each cut to a seeded random window of at most
    max_frames: input tensors (B, T, M, 25, 3)."""
    rng = np.random.default_rng([seed, 30])
    pick = np.arange(len(store))
    if len(pick) > CALIBRATION_SEQUENCES:
        pick = np.sort(rng.choice(len(store), CALIBRATION_SEQUENCES, replace=False))
    order = pick[np.argsort(np.asarray(store.cache.lengths)[pick], kind="stable")]
    for i in range(0, len(order), batch_size):
        x, _, _ = store.batch(order[i : i + batch_size], max_frames=max_frames, rng=rng)
        yield to_tensor(x, device)


def schedule_config(t: dict) -> dict:
    """The train section make_scheduler sees: with train.steps > 0 the schedule runs over steps (it is
    stepped per optimizer step), milestones m (epochs of train.epochs) move to round(m * steps / epochs)."""
    steps = int(t.get("steps") or 0)
    if steps <= 0:
        return t
    epochs = max(1, int(t["epochs"]))
    ms = [max(1, round(int(m) * steps / epochs)) for m in t.get("milestones") or []]
    return {**t, "epochs": steps, "milestones": ms}


@torch.no_grad()
def predict_probs(model: Localizer, store: SequenceStore, device, batch_size: int = 8, quiet: bool = True):
    """Per-sequence float32 (T_i, C+1) softmax probabilities, in store order.

    A batch holds sequences of one length only (up to batch_size of them): padding a shorter sequence
    would change its outputs near its end (the padded frames are nonzero after the data BatchNorm, reach
    it through the temporal convolutions, and the heads' resampling grids depend on the padded length).
    So each sequence gets the probabilities it gets alone, whatever batch_size."""
    model.eval()
    out = [None] * len(store)
    lengths = np.asarray(store.cache.lengths)
    order = np.argsort(lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        stop = start + 1
        first = lengths[order[start]]
        while stop < len(order) and stop - start < batch_size and lengths[order[stop]] == first:
            stop += 1
        batches.append(order[start:stop])
        start = stop
    for idx in tqdm(batches, desc="predict", leave=False, disable=quiet):
        x, _, _ = store.batch(idx)
        logits = model(to_tensor(x, device)).float()
        probs = torch.softmax(logits, dim=-1).cpu().numpy()
        for b, j in enumerate(idx):
            out[j] = probs[b]
    return out


def evaluate_probs(probs, store: SequenceStore, proposals: str = "sweep", protocol: str = "babel") -> dict:
    """Detection mAP (protocol) and frame metrics of per-sequence probabilities against the store's labels."""
    classes = store.cache.classes
    bg = len(classes) - 1
    names = [str(n) for n in store.cache.names]
    gt, pred, pred_lab, true_lab = {}, {}, [], []
    for name, i, p in zip(names, range(len(store)), probs):
        labels = store.get(i)[1]
        gt[name] = segments_from_labels(labels, background=bg)
        pred[name] = proposals_from_scores(p, method=proposals)
        pred_lab.append(p.argmax(axis=1))
        true_lab.append(labels)
    res = evaluate_protocol(gt, pred, protocol, num_classes=bg, class_names=classes[:bg])
    res.update({f"frame_{k}": v for k, v in frame_metrics(pred_lab, true_lab, background=bg).items()})
    return res


VAL_KEY = "val_avg_mAP"  # history key of the validation score that picks best.pt: the protocol's first avg


def _first_avg(res: dict) -> float:
    """The protocol's first averaged mAP (babel / pkummd: avg_mAP_0.1:0.5)."""
    return float(next(v for k, v in res.items() if k.startswith("avg_mAP")))


def holdout(indices, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) positions: a seeded round(fraction * n) of `indices` (at least one when
    fraction > 0 and n >= 2) go to validation, the rest stay for training; both sorted."""
    indices = np.asarray(indices)
    n = len(indices)
    n_val = int(round(fraction * n))
    if fraction > 0 and n_val == 0 and n >= 2:
        n_val = 1
    if n_val and n - n_val < 1:
        raise SkelclError(f"finetune.val_fraction={fraction} leaves no training sequence (of {n} labeled)")
    perm = np.random.default_rng([seed, 0x5A1]).permutation(n)
    return np.sort(indices[perm[n_val:]]), np.sort(indices[perm[:n_val]])


@restores_signals
def run_finetune(
    cfg: dict,
    out,
    *,
    resume: bool = False,
    stop_after_epochs=None,
    quiet: bool = False,
    overwrite: bool = False,
) -> dict:
    """Checks the config, the data and the pretrained encoder before the run folder is created.

    Validation: a seeded finetune.val_fraction of the labeled training sequences is held out (never the
    test part); every train.eval_every epochs its avg mAP goes into the history (val_* keys) and the best
    epoch is kept as best.pt. The test part is evaluated once, at the end, with the last epoch's model."""
    validate(cfg, "finetune config")
    t, f = cfg["train"], cfg["finetune"]
    set_threads(t["num_threads"])
    keep_freed_memory()
    device = setup(t["device"])
    seed = int(t["seed"])
    torch.manual_seed(seed)
    check_out(out, resume, overwrite)
    train_cache = open_split(cfg["data"], "train_part")
    test_store = SequenceStore.from_config(open_split(cfg["data"], "test_part"), cfg["data"])
    if train_cache.classes != test_store.cache.classes:
        raise SkelclError("train and test parts have different class lists")
    labeled = label_subset(len(train_cache), float(f["label_fraction"]), seed)
    labeled, val_idx = holdout(labeled, float(f.get("val_fraction") or 0), seed)
    store = SequenceStore.from_config(train_cache.subset(labeled), cfg["data"])
    val_store = SequenceStore.from_config(train_cache.subset(val_idx), cfg["data"]) if len(val_idx) else None
    num_outputs = train_cache.num_classes
    model, bcfg = build_localizer(cfg, num_outputs)
    if f["pretrained"]:  # the encoder's settings are what runs: config.yaml and the checkpoints say so
        cfg = {**cfg, "model": encoder_model(cfg["model"], bcfg)}
    model.to(device)
    compile_modules(t.get("compile", False), model.backbone)
    recipe = augment.load_recipe(t["recipe"])
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], t)
    bs, steps_cfg = int(t["batch_size"]), int(t.get("steps") or 0)
    per_epoch = len(epoch_batches(len(store), bs, seed, 0, drop_last=False))
    if steps_cfg > 0:  # a fixed budget of optimizer steps, whatever the label fraction
        epochs, total_steps = -(-steps_cfg // per_epoch), steps_cfg
    else:
        epochs = int(t["epochs"])
        total_steps = epochs * per_epoch
    scheduler = make_scheduler(optimizer, t, total_steps)  # stepped after every optimizer step
    frozen = f["protocol"] in FROZEN
    run = RunDir(out, cfg, resume=resume, quiet=quiet, overwrite=overwrite, command="finetune", device=device)
    start, history = 0, []
    if resume:
        start, history = resume_state(run, "localizer", model, optimizer, scheduler, device)
        check_sequences(run, len(store))
    elif calibrates(f):
        calib = SequenceStore.from_config(train_cache, cfg["data"])
        batches = calibration_batches(calib, 32, int(t["max_frames"]), seed, device)
        n = calibrate_bn(model.backbone, batches)
        n_seq = min(len(calib), CALIBRATION_SEQUENCES)
        kind = "pretrained" if f["pretrained"] else "random"
        run.log(f"frozen {kind} encoder: BatchNorm statistics calibrated on {n_seq} of the {len(calib)} "
                f"training sequences ({n} batches, no gradient steps; finetune.bn_calibrate="
                f"{f.get('bn_calibrate', 'random')})")  # fmt: skip
    ddp = wrap(model, device)
    clock = StepClock(t.get("ckpt_every_steps", 0), t.get("ckpt_every_minutes", 0))

    def state(epoch: int, step: int = 0, partial=None) -> dict:  # step > 0: mid-epoch
        return {
            "kind": "localizer", "config": cfg, "backbone": bcfg, "head": model.head_kind,
            "protocol": f["protocol"], "num_outputs": num_outputs, "classes": train_cache.classes,
            "bodies": test_store.bodies, "epoch": epoch, "step": step, "partial": partial or {},
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "history": history, "rng": rng_state(),
            "world_size": world_info()[1], "sequences": len(store),
        }  # fmt: skip

    source = f["pretrained"] or "random init"
    run.log(f"finetune ({f['protocol']}, labels on {len(store) + len(val_idx)}/{len(train_cache)} sequences, "
            f"encoder: {source}{' (frozen)' if frozen else ''}, head {model.head_kind}): {epochs} epochs "
            f"= {total_steps} optimizer steps, batch {bs}, on {device}")  # fmt: skip
    for note in size_warnings(store, cfg["data"], bs, "labeled training"):
        run.log(f"warning: {note}")
    eval_every = int(t["eval_every"]) if val_store is not None else 0
    if val_store is not None:
        every = (
            f"evaluated every {eval_every} epoch(s)" if eval_every else "not evaluated (train.eval_every 0)"
        )
        run.log(
            f"validation: {len(val_store)} of them held out (finetune.val_fraction), not trained on, {every}"
        )
    vals = [h[VAL_KEY] for h in history if VAL_KEY in h]
    best_val = max(vals) if vals else -1.0
    waits = []  # per epoch: share of the time the step loop waited for data
    run.start_epochs(start, epochs)
    for epoch in range(start, epochs):
        set_train_mode(model, f["protocol"])
        t0, lr = time.time(), optimizer.param_groups[0]["lr"]  # lr: that of the epoch's last step
        batches = epoch_batches(len(store), bs, seed, epoch, drop_last=False)
        batches = batches[: total_steps - epoch * per_epoch]  # the last epoch of a step budget is cut
        first = run.resume_step if epoch == start else 0  # steps of this epoch already done (resume)
        total, count = (run.resume_partial["total"], run.resume_partial["count"]) if first else (0.0, 0)
        stop_at_end = False
        # the next batch is read and augmented in a background thread while this one computes
        feed = finetune_feed(store, batches, recipe, seed, epoch, t["augment_backend"],
                             int(t["max_frames"]), device, t.get("prefetch", True), start=first)  # fmt: skip
        bar = run.bar(feed, desc=f"finetune {epoch + 1}/{epochs}")
        for step, (view, y) in enumerate(bar, start=first):
            with autocast(device, t["amp"], t.get("cpu_amp", False)):
                logits = ddp(view)
            loss = F.cross_entropy(logits.float().reshape(-1, num_outputs), y.reshape(-1), ignore_index=-1)
            if not torch.isfinite(loss):
                raise SkelclError(f"finetune: loss became {float(loss)} at epoch {epoch + 1} step {step + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            total += float(loss.detach())
            count += 1
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
            partial = {"total": total, "count": count}
            done = epoch * per_epoch + step + 1
            stop_at_end = clock.after_step(run, done, epoch, step, len(batches), state, partial)
        wait_share = feed.wait_s / max(time.time() - t0, 1e-9)  # time blocked on the next batch
        waits.append(wait_share)
        run.scalars("time", {"data_wait_share": wait_share}, epoch + 1)
        record = {"epoch": epoch + 1, "steps": epoch * per_epoch + len(batches),
                  "loss": mean_scalar(total / max(1, count)),
                  "lr": lr, "seconds": time.time() - t0, "data_wait_share": wait_share}  # fmt: skip
        last = epoch + 1 == epochs
        is_best = False
        if eval_every and ((epoch + 1) % eval_every == 0 or last) and is_main():
            res = evaluate_probs(predict_probs(model, val_store, device, int(cfg["eval"]["batch_size"])),
                                 val_store, cfg["eval"]["proposals"], cfg["eval"]["protocol"])  # fmt: skip
            keep = ("mAP@", "avg_mAP", "frame_")
            record.update({f"val_{k}": v for k, v in res.items() if k.startswith(keep)})
            record[VAL_KEY] = _first_avg(res)
            is_best = record[VAL_KEY] > best_val
            best_val = max(best_val, record[VAL_KEY])
        history.append(record)
        kept = {k: v for k, v in record.items() if k != "data_wait_share"}  # already under time/
        run.scalars("finetune", kept, epoch + 1)
        text = f"loss {record['loss']:.4f}, lr {record['lr']:.4g}"
        if VAL_KEY in record:
            text += f", val avg mAP {record[VAL_KEY]:.4f}{' (best)' if is_best else ''}"
        text += f", waited for data {100 * wait_share:.1f} %"
        run.log_epoch(epoch + 1, text, record["seconds"])
        run.save_checkpoint(state(epoch + 1), epoch + 1, last or stop_at_end, best=is_best)
        clock.saved()
        barrier()
        if stop_at_end and not last:
            raise preempted(run)
        if stop_after_epochs is not None and epoch + 1 - start >= stop_after_epochs and not last:
            run.log(f"stopped after epoch {epoch + 1} (stop_after_epochs)")
            run.close()
            return {"history": history, "stopped": True}
    final = {}
    if is_main():
        final = evaluate_probs(predict_probs(model, test_store, device, int(cfg["eval"]["batch_size"])),
                               test_store, cfg["eval"]["proposals"], cfg["eval"]["protocol"])  # fmt: skip
    metrics = {"history": history, "final": final, "labeled_sequences": int(len(store) + len(val_idx)),
               "protocol": f["protocol"], "head": model.head_kind, "encoder": source,
               "steps": int(history[-1]["steps"]) if history else 0, "epochs": epochs,
               "train_sequences": int(len(train_cache)), "test_sequences": int(len(test_store)),
               "val_sequences": 0 if val_store is None else len(val_store),
               "data_wait_share": sum(waits) / max(1, len(waits))}  # fmt: skip
    if vals or any(VAL_KEY in h for h in history):
        best = max((h for h in history if VAL_KEY in h), key=lambda h: h[VAL_KEY])
        metrics.update(best_epoch=int(best["epoch"]), best_val=float(best[VAL_KEY]))
    run.write_metrics(metrics, title="test")  # logs every test number as the last line of log.txt
    run.close()
    return metrics


def load_localizer(path, device="cpu") -> tuple[Localizer, dict]:
    """(model in eval mode, checkpoint dict) from a fine-tuning checkpoint or run directory."""
    p = Path(path)
    if p.is_dir():
        p = p / "last.pt"
    st = checkpoint.load(p, map_location=device)
    if st.get("kind") != "localizer":
        raise SkelclError(f"{p} is not a localization checkpoint (kind {st.get('kind')!r}); "
                          "give a `skelcl finetune` run")  # fmt: skip
    model = Localizer(Backbone(**st["backbone"]), st["num_outputs"], head=st["head"])
    model.load_state_dict(st["model"])
    return model.to(device).eval(), st
