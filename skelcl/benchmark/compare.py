"""`skelcl bench compare BASE.json NEW.json [--threshold 0.1]`: two results side by side.

What is compared, per figure present in both files:
  - a figure with a ratio to its plain path (measured in the same run): the ratios, so two machines of
    different speed compare fairly; a regression is new_ratio < base_ratio * (1 - threshold);
  - else a GPU figure with an H100-equivalent value in both: those values (lower is better for times,
    higher for rates);
  - else the raw values when both runs come from the same machine (same CPU model, cores and card):
    shown for information ("faster" / "slower"), counted as regressions only with --absolute (absolute
    times on a shared machine move with its load); from different machines: "not comparable".
Exit status 1 when any figure regressed beyond the threshold, 0 otherwise.
"""

from __future__ import annotations

from skelcl.benchmark.record import read_result


def same_machine(a: dict, b: dict) -> bool:
    keys = ("cpu", "cores", "card")
    return all(a["machine"].get(k) == b["machine"].get(k) for k in keys)


def compare(base: dict, new: dict, threshold: float = 0.1, absolute: bool = False) -> list[dict]:
    """One row per figure name in either result: {name, basis, base, new, change, status}; change is the
    relative improvement (+0.25: 25 % better, -0.2: 20 % worse) on the basis used; status is "ok",
    "regressed", "improved", "only in base", "only in new", "not comparable", or for raw values without
    `absolute` "same", "slower", "faster" (information only)."""
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    b_recs = {r["name"]: r for r in base["records"]}
    n_recs = {r["name"]: r for r in new["records"]}
    same = same_machine(base, new)
    rows = []
    for name in list(b_recs) + [n for n in n_recs if n not in b_recs]:
        b, n = b_recs.get(name), n_recs.get(name)
        row = {"name": name, "basis": None, "base": None, "new": None, "change": None}
        if b is None or n is None:
            row["status"] = "only in new" if b is None else "only in base"
            rows.append(row)
            continue
        if b["ratio"] is not None and n["ratio"] is not None:
            basis, vb, vn, higher = "ratio", b["ratio"], n["ratio"], True
        elif b.get("h100_value") is not None and n.get("h100_value") is not None:
            basis, vb, vn, higher = (
                "H100-eq " + n["unit"],
                b["h100_value"],
                n["h100_value"],
                n["higher_is_better"],
            )
        elif same and b["unit"] == n["unit"]:
            basis, vb, vn, higher = n["unit"], b["value"], n["value"], n["higher_is_better"]
        else:
            row["status"] = "not comparable"  # absolute figure from another machine
            rows.append(row)
            continue
        if vb == 0:
            row.update(basis=basis, base=vb, new=vn, status="not comparable")
            rows.append(row)
            continue
        change = vn / vb - 1 if higher else vb / vn - 1 if vn else float("inf")
        status = "regressed" if change < -threshold else "improved" if change > threshold else "ok"
        if basis == n["unit"] and not absolute:
            status = {"regressed": "slower", "improved": "faster", "ok": "same"}[status]
        row.update(basis=basis, base=vb, new=vn, change=change, status=status)
        rows.append(row)
    return rows


def format_rows(rows: list[dict], threshold: float) -> str:
    def num(x):
        return "-" if x is None else f"{x:.3g}"

    table = [("figure", "basis", "base", "new", "change", "status")]
    for r in rows:
        ch = "-" if r["change"] is None else f"{100 * r['change']:+.1f} %"
        table.append((r["name"], r["basis"] or "-", num(r["base"]), num(r["new"]), ch, r["status"]))
    w = [max(len(t[i]) for t in table) for i in range(6)]
    lines = []
    for j, t in enumerate(table):
        lines.append("  ".join(c.ljust(w[i]) if i in (0, 1, 5) else c.rjust(w[i]) for i, c in enumerate(t)))
        if j == 0:
            lines.append("  ".join("-" * x for x in w))
    bad = sum(r["status"] == "regressed" for r in rows)
    lines.append(f"{bad} figure(s) regressed by more than {100 * threshold:.0f} %")
    return "\n".join(lines)


def main(base_path, new_path, threshold: float = 0.1, absolute: bool = False, out=print) -> int:
    base, new = read_result(base_path), read_result(new_path)
    rows = compare(base, new, threshold, absolute)
    if not same_machine(base, new):
        out(
            f"different machines ({base['machine'].get('cpu')} / {new['machine'].get('cpu')}): ratios to the "
            "plain path and H100-equivalent values only"
        )
    out(format_rows(rows, threshold))
    return 1 if any(r["status"] == "regressed" for r in rows) else 0
