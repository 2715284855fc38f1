"""The README and docs/ as a user follows them: their Python blocks run as written (after the `skelcl synth`
block above them) and compute the values their comments promise; every `skelcl ...` and
`python scripts/gpu_check.py ...` line of their shell blocks parses with the command's own parser; every
relative link and #anchor resolves; the run folder section names every key pretraining and fine-tuning runs
write. Also the house rules of the package: no import circle among skelcl's modules, and no study, demo or
plotting code in skelcl/train/."""

import ast
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from skelcl.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CHEAP = ("skelcl synth ",)  # setup commands run before a snippet (each well under a second)
SHELL = ("bash", "sh", "shell", "console")


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of each fenced block, in order."""
    return [(m[1], m[2]) for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)]


def command_lines(code: str) -> list[str]:
    """The commands of a shell block: comments dropped, `\\` continuations joined, `&&` chains split."""
    joined = re.sub(r"\\\n", " ", code)
    out = []
    for line in joined.splitlines():
        line = line.split(" #")[0].strip()
        if line and not line.startswith("#"):
            out.extend(part.strip() for part in line.split("&&"))
    return out


def python_snippets():
    out = []
    for page in PAGES:
        found = blocks(page.read_text())
        for i, (lang, code) in enumerate(found):
            if lang != "python":
                continue
            setup = []
            if i > 0 and found[i - 1][0] in SHELL:
                lines = command_lines(found[i - 1][1])
                if lines and all(ln.startswith(CHEAP) for ln in lines):
                    setup = lines
            out.append(pytest.param(setup, code, id=f"{page.stem}-block{i}"))
    return out


def skelcl_commands():
    out = []
    for page in PAGES:
        for lang, code in blocks(page.read_text()):
            if lang not in SHELL:
                continue
            for cmd in command_lines(code):
                words = shlex.split(cmd)
                if words[:1] == ["skelcl"]:
                    out.append(pytest.param(words[1:], id=f"{page.stem}: {cmd[:60]}"))
                elif "-m" in words and words[words.index("-m") + 1 :][:1] == ["skelcl"]:  # python / torchrun
                    out.append(pytest.param(words[words.index("-m") + 2 :], id=f"{page.stem}: {cmd[:60]}"))
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


def test_docs_have_code_to_check():
    assert len(PAGES) >= 9
    assert len(python_snippets()) >= 2 and len(skelcl_commands()) >= 20 and len(gpu_check_commands()) >= 3


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


def gpu_check_commands():
    out = []
    for page in PAGES:
        for lang, code in blocks(page.read_text()):
            for cmd in command_lines(code) if lang in SHELL else []:
                words = [w for w in shlex.split(cmd) if not re.match(r"^[A-Z_]+=", w)]  # env settings
                if words[:2] == ["python", "scripts/gpu_check.py"]:
                    out.append(pytest.param(words[2:], id=f"{page.stem}: {cmd[:60]}"))
    return out


@pytest.mark.parametrize("args", gpu_check_commands())
def test_gpu_check_command_parses(args):
    from skelcl.benchmark.gpu.check import parse_args

    try:
        parse_args(args)
    except SystemExit as e:
        pytest.fail(f"scripts/gpu_check.py {' '.join(args)}: refused by its parser ({e})")


@pytest.mark.parametrize("args", skelcl_commands())
def test_skelcl_command_parses(args):
    try:
        ns = build_parser().parse_args(args)
    except SystemExit as e:  # argparse's way of refusing a command line
        pytest.fail(f"skelcl {' '.join(args)}: refused by the parser ({e})")
    assert ns.command == args[0]


def test_command_check_refuses_what_skelcl_refuses():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["pretrain", "--no-such-option"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["no-such-command"])
    assert [c.split() for c in command_lines("a && b \\\n  c  # note\n# only a comment\n")] == [
        ["a"],
        ["b", "c"],
    ]


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    return {slug(m[1]) for m in re.finditer(r"^#+ (.+)$", text, flags=re.M)}


def links(page: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def test_slug_matches_github():
    assert slug("Real datasets: `skelcl prepare`") == "real-datasets-skelcl-prepare"
    assert slug("Runs, checkpoints and resume") == "runs-checkpoints-and-resume"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    bad = []
    for target in links(page):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading with that anchor")
    assert not bad, f"{page.name}: {bad}"


def test_link_check_sees_links():
    assert "docs/results.md" in links(ROOT / "README.md")
    assert "real-datasets-skelcl-prepare" in anchors(ROOT / "docs" / "data.md")


GUIDE = ROOT / "docs" / "guide.md"


def run_section() -> str:
    return GUIDE.read_text().split("## Run folders and metrics", 1)[1].split("\n## ", 1)[0]


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
        assert not missing, f"{run.name}: keys not in the run folder section of docs/guide.md: {missing}"
        written = {
            re.sub(r"epoch_\d+", "epoch_N", p.name) + ("/" if p.is_dir() else "") for p in run.iterdir()
        }
        assert written <= files, (
            f"{run.name}: files not in the run folder section of docs/guide.md: {written - files}"
        )


def import_graph() -> dict[str, set[str]]:
    """skelcl's modules and the skelcl modules each one imports (absolute or relative)."""
    pkg = ROOT / "skelcl"
    files = {}
    for f in pkg.rglob("*.py"):
        name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
        files[name.removesuffix(".__init__")] = f
    graph = {}
    for mod, f in files.items():
        base = mod if f.name == "__init__.py" else mod.rpartition(".")[0]
        out = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = base.split(".")
                    module = ".".join(
                        parts[: len(parts) - node.level + 1] + ([node.module] if node.module else [])
                    )
                else:
                    module = node.module or ""
                for a in node.names:
                    full = f"{module}.{a.name}"
                    out.add(full if full in files else module)
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
        graph[mod] = {t for t in out if t in files and t != mod and not mod.startswith(t + ".")}
    return graph


def circles(graph: dict[str, set[str]]) -> list[str]:
    """Pairs of modules where one imports the other, directly or through one module between, and back."""
    found = []
    for a in sorted(graph):
        for b in sorted(graph[a]):
            back = a in graph.get(b, set()) or any(a in graph.get(c, set()) for c in graph[b])
            if back and f"{b} <-> {a}" not in found:
                found.append(f"{a} <-> {b}")
    return found


def test_no_import_circle_among_skelcl_modules():
    graph = import_graph()
    assert "skelcl.train.pretrain" in graph and graph["skelcl.study.demo"]
    assert not circles(graph)


def test_circle_check_finds_circles():
    assert circles({"a": {"b"}, "b": {"a"}}) == ["a <-> b"]
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}})
    assert not circles({"a": {"b"}, "b": {"c"}, "c": set()})


def test_train_holds_no_study_demo_or_plotting_code():
    train = ROOT / "skelcl" / "train"
    names = [f.name for f in train.rglob("*.py")]
    assert "pretrain.py" in names
    assert not [n for n in names if re.search(r"experiment|demo|report|plot|figure", n)], names
    for f in train.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                mods = [node.module or ""]
            assert not [m for m in mods if m.split(".")[0] == "matplotlib" or m.startswith("skelcl.study")], (
                f"{f.name} imports {mods}"
            )
