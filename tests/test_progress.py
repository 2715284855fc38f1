"""`skelcl bench` progress: a bar on a terminal, plain lines (no carriage returns) when stderr is redirected.
The benchmark subprocess is replaced by a fake that prints pytest -v lines, so no case really runs."""

import io
import json
import re
import subprocess
from pathlib import Path

import numpy as np

from skelcl.benchmark import runner

CASES = ["synthetic", "backbone", "augment"]


REAL_POPEN = subprocess.Popen


class FakePopen:
    """Stands in for the pytest subprocess: prints one -v line per case and writes an empty result. Other
    subprocesses run for real (importing the suite probes libc with ldconfig through ctypes)."""

    statuses = ("PASSED", "PASSED", "PASSED")

    def __new__(cls, cmd, **kwargs):
        if "--benchmark-json" not in cmd:
            return REAL_POPEN(cmd, **kwargs)
        return super().__new__(cls)

    def __init__(self, cmd, **kwargs):
        out = Path(cmd[cmd.index("--benchmark-json") + 1])
        out.write_text(json.dumps({"benchmarks": []}))
        lines = ["============ test session starts ============\n", "collecting ... collected 3 items\n"]
        for i, (name, st) in enumerate(zip(CASES, self.statuses)):
            lines.append(f"suite.py::test_case[{name}] {st} [{100 * (i + 1) // len(CASES):3d}%]\n")
            lines.append("some other output of the case\n")
        lines.append("============ 3 passed in 1.00s ============\n")
        self.stdout = iter(lines)
        self.returncode = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_plain_lines_when_stderr_is_redirected(monkeypatch, capsys):
    monkeypatch.setattr(runner.subprocess, "Popen", FakePopen)
    assert runner.run_cases("cpu", CASES, quick=True, device="cpu", progress=True) == []
    err = capsys.readouterr().err  # captured: not a terminal
    assert "\r" not in err
    lines = err.splitlines()
    assert len(lines) == len(CASES)
    for i, (line, name) in enumerate(zip(lines, CASES)):
        assert re.fullmatch(rf"bench cpu: {i + 1}/3 {name} done \(\d+ s\)", line), line


def test_failed_case_is_named_and_no_progress_still_prints_lines(monkeypatch, capsys):
    monkeypatch.setattr(FakePopen, "statuses", ("PASSED", "FAILED", "PASSED"))
    monkeypatch.setattr(runner.subprocess, "Popen", FakePopen)
    runner.run_cases("cpu", CASES, quick=True, device="cpu", progress=False)
    lines = capsys.readouterr().err.splitlines()
    assert [x.split(" (")[0] for x in lines] == [
        "bench cpu: 1/3 synthetic done",
        "bench cpu: 2/3 backbone FAILED",
        "bench cpu: 3/3 augment done",
    ]


def test_bar_only_on_a_terminal(monkeypatch, capsys):
    """With a terminal (faked) the tqdm bar draws (carriage returns) and no plain lines are printed."""
    monkeypatch.setattr(runner, "show_bars", lambda: True)
    monkeypatch.setattr(runner.subprocess, "Popen", FakePopen)
    runner.run_cases("cpu", CASES, quick=True, device="cpu", progress=True)
    err = capsys.readouterr().err
    assert "\r" in err and "3/3" in err and "bench cpu: 1/3 synthetic done" not in err


def test_case_progress_writes_to_a_stream():
    buf = io.StringIO()
    p = runner.CaseProgress(2, "bench gpu", bar=False, stream=buf)
    for line in ["x::test_case[a] PASSED\n", "noise PASSED\n", "x::test_case[b] ERROR\n"]:
        p.line(line)
    p.close()
    assert [x.split(" (")[0] for x in buf.getvalue().splitlines()] == [
        "bench gpu: 1/2 a done",
        "bench gpu: 2/2 b ERROR",
    ]


# -- synth and prepare: a bar on a terminal only ----------------------------------------------------------


def test_synth_and_prepare_draw_no_bar_into_redirected_stderr(tmp_path, capsys):
    from skelcl.cli import main
    from skelcl.data import emit

    assert main(["synth", "--out", str(tmp_path / "syn"), "--sequences", "3"]) == 0
    out = capsys.readouterr()
    assert out.err == "" and "wrote 3 sequences" in out.out
    rng = np.random.default_rng(0)
    seqs = [(n, rng.normal(size=(12, 1, 25, 3)), np.full(12, 51)) for n in ("0002-L", "0002-M")]
    emit.emit_pkummd(tmp_path / "pku", seqs)
    assert main(["prepare", "pkummd", str(tmp_path / "pku"), "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr()
    assert out.err == "" and "wrote 2 sequences" in out.out


def test_synth_and_prepare_draw_a_bar_on_a_terminal(tmp_path, monkeypatch, capsys):
    from skelcl import progress
    from skelcl.cli import main
    from skelcl.data import emit

    monkeypatch.setattr(progress, "show_bars", lambda: True)
    assert main(["synth", "--out", str(tmp_path / "syn"), "--sequences", "3"]) == 0
    assert "synth" in capsys.readouterr().err
    rng = np.random.default_rng(0)
    emit.emit_pkummd(tmp_path / "pku", [("0002-L", rng.normal(size=(12, 1, 25, 3)), np.full(12, 51))])
    assert main(["prepare", "pkummd", str(tmp_path / "pku"), "--out", str(tmp_path / "c")]) == 0
    assert "pkummd" in capsys.readouterr().err
    assert main(["prepare", "pkummd", str(tmp_path / "pku"), "--out", str(tmp_path / "q"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
