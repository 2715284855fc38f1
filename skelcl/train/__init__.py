"""Training: pretraining (pretrain), localization training (finetune), run folders (run), checkpoints.

Loading a run's weights:

    from skelcl.train import load_checkpoint
    st = load_checkpoint("RUN")            # or load_checkpoint("RUN", "best") / ("RUN", 20) / ("x.pt")
    st["kind"], st["epoch"], st["config"]   # "pretrain" | "localizer", epochs done, the resolved config
    st["model"]                             # the whole model's state dict

    from skelcl.train import export_encoder
    export_encoder("RUN", "encoder.pt")     # plain state dict: torch.load("encoder.pt", weights_only=True)

(the same as `skelcl export RUN --out encoder.pt`; see skelcl.train.checkpoint). Names load lazily, so
`import skelcl.train.config` does not import torch.
"""

_LAZY = {"load_checkpoint": "skelcl.train.checkpoint", "export_encoder": "skelcl.train.checkpoint"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'skelcl.train' has no attribute {name!r}")


__all__ = ["export_encoder", "load_checkpoint"]
