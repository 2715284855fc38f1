"""`skelcl bench history [DIR] [--out PNG_DIR]`: the committed results as a history.

Every result file under DIR (default bench/results/, searched recursively for files in the skelcl-bench
schema; other JSON files there are skipped) is one point per figure, ordered by the commit time of the
revision it was measured at (then by creation time). For each figure one PNG (DIR_OUT/<figure>.png, '/'
turned into '__') draws the value over revisions (and the ratio to the plain path, where there is one, on
a second axis); the command prints per figure the best and the latest value with their revisions.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from skelcl.benchmark.record import SCHEMA, read_result
from skelcl.errors import SkelclError


def load_history(root) -> list[tuple[Path, dict]]:
    """(path, result) of every skelcl-bench result under root, oldest revision first."""
    root = Path(root)
    if not root.is_dir():
        raise SkelclError(f"{root}: no such directory")
    found = []
    for p in sorted(root.rglob("*.json")):
        try:
            head = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(head, dict) and head.get("schema") == SCHEMA:
            found.append((p, read_result(p)))  # a damaged result file is an error naming it
    found.sort(key=lambda pr: (pr[1]["git"].get("date") or "", pr[1].get("created") or ""))
    return found


def series(history) -> dict[str, list[dict]]:
    """figure name -> [{revision, label, value, spread, ratio, unit, higher_is_better, file}] in order."""
    out: dict[str, list[dict]] = {}
    for path, res in history:
        rev = res["git"].get("revision") or "unknown"
        label = rev[:8] + ("+" if res["git"].get("dirty") else "") + (" q" if res.get("quick") else "")
        for r in res["records"]:
            out.setdefault(r["name"], []).append(
                {
                    "revision": rev,
                    "label": label,
                    "value": r["value"],
                    "spread": r["spread"],
                    "ratio": r["ratio"],
                    "unit": r["unit"],
                    "higher_is_better": r["higher_is_better"],
                    "file": str(path),
                }
            )
    return out


def best_and_latest(points: list[dict]) -> tuple[dict, dict]:
    """The best point (by ratio when every point has one, else by value) and the latest one."""
    if all(p["ratio"] is not None for p in points):
        best = max(points, key=lambda p: p["ratio"])
    else:
        sign = 1 if points[-1]["higher_is_better"] else -1
        best = max(points, key=lambda p: sign * p["value"])
    return best, points[-1]


def draw(name: str, points: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = list(range(len(points)))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(points) + 2), 3.2))
    ax.errorbar(
        x, [p["value"] for p in points], yerr=[p["spread"] / 2 for p in points], marker="o", capsize=3
    )
    ax.set_ylabel(points[-1]["unit"])
    ax.set_xticks(x, [p["label"] for p in points], rotation=45, ha="right", fontsize=7)
    ax.set_title(name, fontsize=9)
    if any(p["ratio"] is not None for p in points):
        ax2 = ax.twinx()
        ax2.plot(
            x, [p["ratio"] if p["ratio"] is not None else float("nan") for p in points], "s--", color="C1"
        )
        ax2.set_ylabel("x plain path", color="C1")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name.replace("/", "__")) + ".png"


def main(root="bench/results", out_dir=None, pattern: str | None = None, out=print) -> int:
    history = load_history(root)
    if not history:
        raise SkelclError(
            f"{root}: no result files in the {SCHEMA} schema (write one with skelcl bench --out)"
        )
    out_dir = Path(out_dir) if out_dir else Path(root) / "history"
    figures = series(history)
    if pattern:
        figures = {k: v for k, v in figures.items() if re.search(pattern, k)}
    out(f"{len(history)} result file(s), {len(figures)} figure(s); plots in {out_dir}")
    for name, points in figures.items():
        best, latest = best_and_latest(points)
        draw(name, points, out_dir / file_name(name))

        def show(p):
            r = "" if p["ratio"] is None else f" (x{p['ratio']:.2f} plain)"
            return f"{p['value']:.4g} {p['unit']}{r} at {p['label']}"

        out(f"{name}: best {show(best)}; latest {show(latest)}")
    return 0
