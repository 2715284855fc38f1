"""Shared by the CLI and trainer tests: the small synthetic data, tiny run overrides, and the check of a
one-line CLI error. (conftest.py holds the `tiny` fixture built from SMALL.)"""

from skelcl.cli import main
from skelcl.data.synthetic import SynthConfig

SMALL = SynthConfig(length=(70, 100), num_subjects=8, test_every=4)

# A tiny pretraining / fine-tuning run (seconds on a CPU).
PRE = ["data.bodies=1", "model.width=0.125", "train.batch_size=6", "train.num_threads=2",
       "pretrain.queue_size=8", "pretrain.snippet_queue_size=40", "pretrain.momentum=0.9"]  # fmt: skip
FT = ["data.bodies=1", "model.width=0.125", "train.batch_size=4", "train.num_threads=2", "train.lr=0.003"]


def cli_error(capsys, argv, *parts) -> str:
    """main(argv) exits 2 with a one-line `skelcl CMD: error: ...` naming each of parts, no traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith(f"skelcl {argv[0]}: error: "), err
    assert not any("Traceback" in line for line in err), err
    for p in parts:
        assert p in err[-1], err
    return err[-1]
