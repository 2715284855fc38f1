"""The README as a user follows it: its Python snippets run as written after the commands above them, the
values their comments promise are what they compute, and its "Run folders and metrics" section names every
key that pretraining and fine-tuning runs write."""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from skelcl.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
CHEAP = ("skelcl synth ",)  # setup commands run before a snippet (each well under a second)


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of each fenced block, in order."""
    return [(m[1], m[2]) for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)]


def python_snippets():
    found = blocks(README.read_text())
    out = []
    for i, (lang, code) in enumerate(found):
        if lang != "python":
            continue
        setup = []
        if i > 0 and found[i - 1][0] == "bash":
            lines = [ln.split("#")[0].strip() for ln in found[i - 1][1].splitlines()]
            lines = [ln for ln in lines if ln]
            if lines and all(ln.startswith(CHEAP) for ln in lines):
                setup = lines
        out.append(pytest.param(setup, code, id=f"block{i}"))
    return out


def with_checks(code: str) -> str:
    """The snippet with each `EXPR  # LITERAL: words` line turned into a check that EXPR equals LITERAL."""
    lines = []
    for line in code.splitlines():
        expr, _, comment = line.partition("#")
        value = comment.split(":")[0].strip()
        try:
            ast.parse(expr.strip(), mode="eval")
            expected = ast.literal_eval(value)
        except (SyntaxError, ValueError):
            lines.append(line)
            continue
        e = expr.strip()
        lines.append(f"assert _close(({e}), {expected!r}), ({e!r}, ({e}))")
    helper = (
        "def _close(a, b):\n"
        "    if isinstance(b, tuple):\n"
        "        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))\n"
        "    return abs(a - b) < 1e-9 if isinstance(b, float) else a == b\n"
    )
    return helper + "\n".join(lines) + "\n"


def test_readme_has_python_snippets():
    assert len(python_snippets()) >= 2
    assert "cd skelcl" in blocks(README.read_text())[0][1]  # the first commands start in the clone


@pytest.mark.parametrize(("setup", "code"), python_snippets())
def test_python_snippet_runs_as_written(tmp_path, setup, code):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    for command in setup:
        r = subprocess.run(
            command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 0, (command, r.stderr)
    r = subprocess.run([sys.executable, "-c", with_checks(code)], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_value_checks_are_real():
    """with_checks turns a promised value into an assert (and leaves prose comments alone)."""
    code = "x = 2\nx + 1   # 3: three\nx  # the value x\n"
    assert "assert _close((x + 1), 3)" in with_checks(code)
    r = subprocess.run([sys.executable, "-c", with_checks(code.replace("# 3", "# 4"))], capture_output=True)
    assert r.returncode != 0


def run_section() -> str:
    return README.read_text().split("## Run folders and metrics", 1)[1].split("\n## ", 1)[0]


def normalized(key: str) -> str:
    return re.sub(r"@[\d.]+", "@t", key)


def test_run_folder_section_names_every_key(tmp_path):
    cache, pre, ft = tmp_path / "data", tmp_path / "pre", tmp_path / "ft"
    assert main(["synth", "--out", str(cache), "--sequences", "14", "--seed", "5"]) == 0
    small = ["model.width=0.125", "train.epochs=1", "data.bodies=1"]
    assert main(["pretrain", "--data", str(cache), "--out", str(pre), "--quiet", *small,
                 "train.batch_size=6"]) == 0  # fmt: skip
    assert main(["finetune", "--data", str(cache), "--out", str(ft), "--pretrained", str(pre), "--quiet",
                 *small, "train.batch_size=4"]) == 0  # fmt: skip
    section = run_section()
    documented = set(re.findall(r"`([^`\s]+)`", section))
    files = set(re.findall(r"^RUN/(\S+)", section, flags=re.M))
    assert {"config.yaml", "log.txt", "metrics.json", "tb/", "last.pt", "best.pt"} <= files
    for run in (pre, ft):
        m = json.loads((run / "metrics.json").read_text())
        keys = set(m) | {k for h in m["history"] for k in h} | set(m["final"])
        missing = sorted({normalized(k) for k in keys} - documented)
        assert not missing, f"{run.name}: keys not in the README's run folder section: {missing}"
        written = {
            re.sub(r"epoch_\d+", "epoch_N", p.name) + ("/" if p.is_dir() else "") for p in run.iterdir()
        }
        assert written <= files, (
            f"{run.name}: files not in the README's run folder section: {written - files}"
        )
