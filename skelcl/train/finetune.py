"""Localization training and evaluation: encoder (pretrained or random) + U-shaped fusion head.

Loss: frame-wise cross-entropy over the C+1 classes (background last), frames labeled -1 (padding,
unlabeled) ignored. Protocols (finetune.*): "finetune" trains everything; "linear" freezes the encoder
(parameters and BN statistics) and trains the head only; label_fraction < 1 keeps labels on a seeded
subset of the training sequences (the others are not used). Evaluation: per-frame softmax on the whole
test sequences -> proposals (skelcl.eval.proposals_from_scores) -> detection mAP (evaluate_protocol) and
frame metrics (accuracy, edit, F1).
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
from skelcl.train.data import SequenceStore, epoch_batches, label_subset, step_rng, to_tensor
from skelcl.train.distributed import barrier, is_main, mean_scalar, setup, wrap
from skelcl.train.pretrain import backbone_config, load_encoder_state, open_split
from skelcl.train.run import (
    RunDir,
    autocast,
    make_optimizer,
    make_scheduler,
    resume_state,
    rng_state,
    set_threads,
)

PROTOCOLS = ("finetune", "linear")


def build_localizer(cfg: dict, num_outputs: int) -> tuple[Localizer, dict]:
    """(model, backbone config). With finetune.pretrained the encoder weights come from that run."""
    f = cfg["finetune"]
    if f["protocol"] not in PROTOCOLS:
        raise SkelclError(f"finetune.protocol must be one of {', '.join(PROTOCOLS)}, got {f['protocol']!r}")
    if f["pretrained"]:
        bcfg, state = load_encoder_state(f["pretrained"])
        backbone = Backbone(**bcfg)
        backbone.load_state_dict(state)
    else:
        if f["protocol"] == "linear":
            raise SkelclError("finetune.protocol linear needs finetune.pretrained (a frozen random encoder)")
        bcfg = backbone_config(cfg["model"])
        backbone = Backbone(**bcfg)
    model = Localizer(backbone, num_outputs, head=f["head"])
    if f["protocol"] == "linear":
        for p in model.backbone.parameters():
            p.requires_grad_(False)
    return model, bcfg


def set_train_mode(model: Localizer, protocol: str) -> None:
    model.train()
    if protocol == "linear":
        model.backbone.eval()  # frozen: BN statistics stay those of pretraining


@torch.no_grad()
def predict_probs(model: Localizer, store: SequenceStore, device, batch_size: int = 8, quiet: bool = True):
    """Per-sequence float32 (T_i, C+1) softmax probabilities, in store order."""
    model.eval()
    out = [None] * len(store)
    order = np.argsort(store.cache.lengths, kind="stable")  # similar lengths together: less padding
    for i in tqdm(range(0, len(order), batch_size), desc="predict", leave=False, disable=quiet):
        idx = order[i : i + batch_size]
        x, lengths, _ = store.batch(idx)
        logits = model(to_tensor(x, device)).float()
        probs = torch.softmax(logits, dim=-1).cpu().numpy()
        for b, j in enumerate(idx):
            out[j] = probs[b, : lengths[b]]
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


def run_finetune(
    cfg: dict, out, *, resume: bool = False, stop_after_epochs=None, quiet: bool = False
) -> dict:
    t, f = cfg["train"], cfg["finetune"]
    set_threads(t["num_threads"])
    device = setup(t["device"])
    seed = int(t["seed"])
    torch.manual_seed(seed)
    run = RunDir(out, cfg, resume=resume, quiet=quiet)
    train_cache = open_split(cfg["data"], "train_part")
    test_store = SequenceStore.from_config(open_split(cfg["data"], "test_part"), cfg["data"])
    if train_cache.classes != test_store.cache.classes:
        raise SkelclError("train and test parts have different class lists")
    labeled = label_subset(len(train_cache), float(f["label_fraction"]), seed)
    store = SequenceStore.from_config(train_cache.subset(labeled), cfg["data"])
    num_outputs = train_cache.num_classes
    model, bcfg = build_localizer(cfg, num_outputs)
    model.to(device)
    recipe = augment.load_recipe(t["recipe"])
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], t)
    scheduler = make_scheduler(optimizer, t)
    start, history = 0, []
    if resume:
        start, history = resume_state(run, "localizer", model, optimizer, scheduler, device)
    ddp = wrap(model, device)
    epochs, bs = int(t["epochs"]), int(t["batch_size"])
    source = f["pretrained"] or "random init"
    run.log(f"finetune ({f['protocol']}, labels on {len(store)}/{len(train_cache)} sequences, "
            f"encoder: {source}, head {f['head']}): {epochs} epochs, batch {bs}, on {device}")  # fmt: skip
    eval_every = int(t["eval_every"])
    for epoch in range(start, epochs):
        set_train_mode(model, f["protocol"])
        t0 = time.time()
        batches = epoch_batches(len(store), bs, seed, epoch, drop_last=False)
        total, count = 0.0, 0
        bar = tqdm(
            batches, desc=f"finetune {epoch + 1}/{epochs}", leave=False, disable=quiet or not is_main()
        )
        for step, idx in enumerate(bar):
            rng = step_rng(seed, epoch, step)
            x, lengths, labels = store.batch(idx, max_frames=int(t["max_frames"]), rng=rng)
            params = augment.sample(recipe, lengths, rng)
            (view,) = augment.apply(x, lengths, params, backend=t["augment_backend"], check_finite=False)
            y = to_tensor(labels, device)
            with autocast(device, t["amp"]):
                logits = ddp(to_tensor(view, device))
            loss = F.cross_entropy(logits.float().reshape(-1, num_outputs), y.reshape(-1), ignore_index=-1)
            if not torch.isfinite(loss):
                raise SkelclError(f"finetune: loss became {float(loss)} at epoch {epoch + 1} step {step + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            count += 1
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        scheduler.step()
        record = {"epoch": epoch + 1, "loss": mean_scalar(total / max(1, count)),
                  "lr": optimizer.param_groups[0]["lr"], "seconds": time.time() - t0}  # fmt: skip
        last = epoch + 1 == epochs
        if eval_every and (epoch + 1) % eval_every == 0 and not last and is_main():
            res = evaluate_probs(predict_probs(model, test_store, device, int(cfg["eval"]["batch_size"])),
                                 test_store, cfg["eval"]["proposals"], cfg["eval"]["protocol"])  # fmt: skip
            record.update({k: v for k, v in res.items() if k.startswith(("mAP@", "avg_mAP", "frame_"))})
        history.append(record)
        run.scalars("finetune", record, epoch + 1)
        extra = f", avg mAP {record['avg_mAP_0.1:0.5']:.4f}" if "avg_mAP_0.1:0.5" in record else ""
        run.log(f"epoch {epoch + 1}/{epochs}: loss {record['loss']:.4f}{extra}")
        if is_main() and ((epoch + 1) % int(t["ckpt_every"]) == 0 or last):
            checkpoint.save(run.checkpoint, {
                "kind": "localizer", "config": cfg, "backbone": bcfg, "head": f["head"],
                "num_outputs": num_outputs, "classes": train_cache.classes, "bodies": test_store.bodies,
                "epoch": epoch + 1,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "history": history, "rng": rng_state(),
            })  # fmt: skip
        barrier()
        if stop_after_epochs is not None and epoch + 1 - start >= stop_after_epochs and not last:
            run.log(f"stopped after epoch {epoch + 1} (stop_after_epochs)")
            run.close()
            return {"history": history, "stopped": True}
    final = {}
    if is_main():
        final = evaluate_probs(predict_probs(model, test_store, device, int(cfg["eval"]["batch_size"])),
                               test_store, cfg["eval"]["proposals"], cfg["eval"]["protocol"])  # fmt: skip
        run.log(f"test: avg mAP@0.1:0.5 {final['avg_mAP_0.1:0.5']:.4f}, mAP@0.5 {final['mAP@0.5']:.4f}, "
                f"frame accuracy {final['frame_accuracy']:.4f}")  # fmt: skip
    metrics = {"history": history, "final": final, "labeled_sequences": int(len(store)),
               "train_sequences": int(len(train_cache)), "test_sequences": int(len(test_store))}  # fmt: skip
    run.write_metrics(metrics)
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
