"""The README is the front door: it starts with what skelcl is, stays short, and its two commands are the
install + demo command and exactly the test command CI runs. Its code blocks and links are checked with the
docs pages' in tests/test_docs.py."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def first_block() -> list[str]:
    code = re.search(r"^```\w*\n(.*?)^```", README.read_text(), flags=re.S | re.M)[1]
    return [ln for ln in code.splitlines() if ln.strip()]


def test_readme_is_short_and_starts_with_what_skelcl_is():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, len(lines)
    assert lines[0] == "# skelcl"
    first_paragraph = README.read_text().split("\n\n")[1]
    assert first_paragraph.startswith("skelcl is ") and "```" not in first_paragraph


def test_readme_gives_the_two_commands_first():
    block = first_block()
    assert block[0].startswith("cd skelcl")  # the commands start in the clone
    assert block[1].startswith("pip install") and block[1].endswith("skelcl demo --out runs/demo")
    ci = (ROOT / ".ci" / "run").read_text()
    assert block[2] in ci.splitlines(), "the README's test command is not what .ci/run runs"
    assert block[2].endswith("python -m pytest -q")


def test_readme_makes_no_claim_the_evidence_does_not_support():
    text = README.read_text().lower()
    assert "does not pay off" not in text and "budget study" in text
