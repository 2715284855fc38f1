"""scripts/fault_inject.py with a small K, and a checkpoint write that hits a file-size limit."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from skelcl.train.checkpoint import load, save

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fault_inject.py"


def test_fault_injection_small(tmp_path):
    """Two kills inside checkpoint writes (2 epochs of 3 steps: 6 writes, the kill at write 1..3 of each
    start): the run ends with the uninterrupted run's weights and no checkpoint is ever found corrupt."""
    res = tmp_path / "fi.json"
    cmd = [sys.executable, str(SCRIPT), "--kills", "2", "--kinds", "write", "--epochs", "2", "--quick",
           "--work", str(tmp_path / "w"), "--json", str(res)]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    s = json.loads(res.read_text())["summary"]
    assert s["faults_injected"] == 2 and s["corrupt_checkpoints"] == 0
    assert s["episodes_equal_final_weights"] == s["episodes"] == 1


def test_checkpoint_write_past_a_file_size_limit(tmp_path):
    """As on a full disk: a one-line SkelclError, the previous checkpoint intact, no temporary file left."""
    path = tmp_path / "last.pt"
    save(path, {"w": torch.zeros(4)})
    code = textwrap.dedent(f"""
        import resource, signal, torch
        from skelcl.errors import SkelclError
        from skelcl.train.checkpoint import save
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        try:
            save({str(path)!r}, {{"w": torch.ones(100000)}})
        except SkelclError as err:
            print(err)
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "could not write" in p.stdout and "File too large" in p.stdout and "intact" in p.stdout
    assert len(p.stdout.strip().splitlines()) == 1
    assert torch.equal(load(path)["w"], torch.zeros(4))
    assert [f.name for f in tmp_path.iterdir()] == ["last.pt"]
