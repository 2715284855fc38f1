"""Localization evaluation speed: detection mAP on 1,000 videos x 20 ground-truth segments x 51 classes with
100,000 predictions (target: seconds, not minutes), side by side with the plain-loop reference, plus the
sweep proposal generator and reading a PKU-MMD style prediction folder.

    python -m pytest bench/bench_eval.py --benchmark-enable    # pytest-benchmark table
    python bench/bench_eval.py     # one run of each, side by side -> bench/results/eval_cpu.json
"""

import argparse
import contextlib
import io
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from skelcl.benchmark.cases import make_eval_case
from skelcl.cli import main as cli_main
from skelcl.eval import PROTOCOLS, detection_map, proposals_from_scores
from skelcl.eval.io import read_segments_dir, write_segments_dir
from skelcl.eval.reference import detection_map_reference

BABEL = PROTOCOLS["babel"][0]


make_case = make_eval_case  # also the `skelcl bench` evaluate case's data


@pytest.fixture(scope="module")
def spread():
    return make_case()


@pytest.fixture(scope="module")
def crowded():
    return make_case(pred_classes=2)


def test_detection_map_babel(benchmark, spread):
    gt, pred = spread
    res = benchmark.pedantic(detection_map, args=(gt, pred, BABEL), kwargs={"num_classes": 51}, rounds=3)
    assert res["num_pred_total"] == 100_000 and 0.2 < res["mAP"][0] < 1


def test_detection_map_crowded(benchmark, crowded):
    gt, pred = crowded
    res = benchmark.pedantic(detection_map, args=(gt, pred, BABEL), kwargs={"num_classes": 51}, rounds=3)
    assert res["num_pred_total"] == 100_000


def test_reference_babel(benchmark, spread):
    gt, pred = spread
    ref = benchmark.pedantic(detection_map_reference, args=(gt, pred, BABEL), rounds=1)
    fast = detection_map(gt, pred, BABEL)
    np.testing.assert_allclose(fast["AP"], ref["AP"], rtol=0, atol=1e-12)


def score_maps(videos=100, frames=1000, classes=51, seed=1):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(videos):
        logits = rng.normal(0, 1, (frames, classes + 1))
        logits = np.cumsum(logits, axis=0) / np.sqrt(np.arange(1, frames + 1))[:, None] * 3  # smooth-ish
        probs = np.exp(logits - logits.max(1, keepdims=True))
        out.append(probs / probs.sum(1, keepdims=True))
    return out


def test_sweep_proposals_100_videos(benchmark):
    maps = score_maps()
    total = benchmark.pedantic(lambda: sum(len(proposals_from_scores(p)) for p in maps), rounds=1)
    assert total > 0


def test_read_prediction_folder(benchmark, spread, tmp_path):
    write_segments_dir(tmp_path, spread[1])
    segs = benchmark.pedantic(read_segments_dir, args=(tmp_path,), rounds=3)
    assert sum(len(s) for s in segs.values()) == 100_000


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "eval_cpu.json"))
    args = parser.parse_args()
    load = os.getloadavg()[0]
    gt, pred = make_case()
    crowded_gt, crowded_pred = make_case(pred_classes=2)
    fast, t_fast = _timed(detection_map, gt, pred, BABEL, num_classes=51)
    ref, t_ref = _timed(detection_map_reference, gt, pred, BABEL)
    assert np.allclose(fast["AP"], ref["AP"], rtol=0, atol=1e-12)
    _, t_pk = _timed(detection_map, gt, pred, PROTOCOLS["pkummd"][0], num_classes=51)
    _, t_crowd = _timed(detection_map, crowded_gt, crowded_pred, BABEL, num_classes=51)
    crowd_ref, t_crowd_ref = _timed(detection_map_reference, crowded_gt, crowded_pred, BABEL)
    maps = score_maps()
    proposals, t_sweep = _timed(lambda: sum(len(proposals_from_scores(p)) for p in maps))
    with tempfile.TemporaryDirectory() as tmp:
        _, t_write = _timed(write_segments_dir, Path(tmp) / "pred", pred)
        _, t_read = _timed(read_segments_dir, Path(tmp) / "pred")
        write_segments_dir(Path(tmp) / "gt", gt)
        argv = [
            "evaluate",
            "--gt",
            f"{tmp}/gt",
            "--pred",
            f"{tmp}/pred",
            "--classes",
            "51",
            "--json",
            f"{tmp}/r.json",
        ]
        with contextlib.redirect_stdout(io.StringIO()):
            code, t_cli = _timed(cli_main, argv)
        assert code == 0
    result = {
        "benchmark": "localization evaluation (skelcl.eval)",
        "case": "1,000 videos x 20 ground-truth segments, 51 classes, 100,000 predictions (2-decimal scores)",
        "detection_map_babel_7_thresholds_s": round(t_fast, 3),
        "reference_loops_babel_s": round(t_ref, 3),
        "speedup_vs_reference": round(t_ref / t_fast, 1),
        "detection_map_pkummd_3_thresholds_s": round(t_pk, 3),
        "crowded_case": "same sizes, each video's segments in 2 classes (about 50 predictions per group)",
        "crowded_detection_map_babel_s": round(t_crowd, 3),
        "crowded_reference_babel_s": round(t_crowd_ref, 3),
        "crowded_speedup_vs_reference": round(t_crowd_ref / t_crowd, 1),
        "crowded_matches_reference": bool(
            np.allclose(
                detection_map(crowded_gt, crowded_pred, BABEL)["AP"], crowd_ref["AP"], rtol=0, atol=1e-12
            )
        ),  # fmt: skip
        "mAP_babel": [round(m, 4) for m in fast["mAP"]],
        "sweep_proposals_100_videos_1000_frames_51_classes_s": round(t_sweep, 3),
        "sweep_proposals_found": int(proposals),
        "write_100k_predictions_folder_s": round(t_write, 3),
        "read_100k_predictions_folder_s": round(t_read, 3),
        "skelcl_evaluate_folders_babel_end_to_end_s": round(t_cli, 3),
        "machine": {
            "cpu_count": os.cpu_count(),
            "processor": platform.processor(),
            "python": platform.python_version(),
        },
        "numpy": np.__version__,
        "load_average_before": load,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
