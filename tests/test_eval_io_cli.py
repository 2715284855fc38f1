"""Segment files (PKU-MMD folders, JSON) and the `skelcl evaluate` command end to end."""

import json
import os
import subprocess
import sys

import pytest

from skelcl.cli import main
from skelcl.eval import EvalInputError, Segment
from skelcl.eval.io import read_segments_dir, read_segments_json, write_segments_dir, write_segments_json

SEGS = {
    "0002-L": [Segment(0, 10, 20, 0.5), Segment(50, 30.5, 41.25, 0.125)],
    "0002-M": [],
    "0003-R": [Segment(7, 0, 1e6, 1.0)],
}


def test_folder_round_trip_and_one_based_text(tmp_path):
    write_segments_dir(tmp_path, SEGS)
    assert (tmp_path / "0002-L.txt").read_text() == "1,10,20,0.5\n51,30.5,41.25,0.125\n"
    assert (tmp_path / "0002-M.txt").read_text() == ""
    assert read_segments_dir(tmp_path) == SEGS
    write_segments_dir(tmp_path / "zero", SEGS, label_base=0)
    assert (tmp_path / "zero" / "0002-L.txt").read_text().startswith("0,10,20,")
    assert read_segments_dir(tmp_path / "zero", label_base=0) == SEGS


def test_folder_reads_pkummd_style_lines(tmp_path):
    (tmp_path / "0291-M.txt").write_text("3 , 120,245,1\n\n 51,900,870,2\n7,1,5\n")
    (tmp_path / "notes.md").write_text("not a label file")
    # a row with start > end is an error naming file and line, unless swap_reversed
    with pytest.raises(EvalInputError, match=r"0291-M.txt:3: start 900 is after end 870"):
        read_segments_dir(tmp_path)
    segs = read_segments_dir(tmp_path, swap_reversed=True)
    # 1-based ids become 0-based; start > end is swapped; the score column defaults to 1
    assert segs == {"0291-M": [Segment(2, 120, 245, 1.0), Segment(50, 870, 900, 2.0), Segment(6, 1, 5, 1.0)]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,2,3\n4,5\n", ":2: expected 'label,start,end"),
        ("1,2,3\n\nwalk,5,6\n", ":3: expected 'label,start,end[,score]' with an integer label"),
        ("1.5,2,3\n", ":1:"),
        ("1,2,nan\n", ":1: start, end and score must be finite"),
        ("0,2,3\n", ":1: unknown class 0 (class ids in this file: 1..51)"),
        ("1,2,3\n52,1,2\n", ":2: unknown class 52 (class ids in this file: 1..51)"),
    ],
)
def test_folder_errors_name_file_and_line(tmp_path, text, message):
    (tmp_path / "v.txt").write_text(text)
    with pytest.raises(EvalInputError) as err:
        read_segments_dir(tmp_path, num_classes=51)
    assert str(tmp_path / "v.txt") + message in str(err.value)


def test_json_round_trip_and_forms(tmp_path):
    path = tmp_path / "s.json"
    write_segments_json(path, SEGS, classes=[f"c{i}" for i in range(51)])
    doc = json.loads(path.read_text())
    assert doc["label_base"] == 0 and doc["videos"]["0002-L"][0] == [0, 10, 20, 0.5]
    assert read_segments_json(path) == SEGS
    path.write_text(
        json.dumps({"label_base": 1, "videos": {"a": [{"label": 2, "start": 5, "end": 9}, [1, 0, 4, 0.3]]}})
    )
    assert read_segments_json(path) == {"a": [Segment(1, 5, 9, 1.0), Segment(0, 0, 4, 0.3)]}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], 'expected an object with a "videos" mapping'),
        ({"videos": {"a": [[0, 1]]}}, "video 'a', segment 0: expected [label, start, end, score]"),
        ({"videos": {"a": [[0, 1, 2], ["x", 1, 2]]}}, "video 'a', segment 1: label must be an integer"),
        ({"videos": {"a": [{"label": 0, "start": 1}]}}, "needs label, start and end"),
        ({"classes": ["x"], "videos": {"a": [[1, 0, 2]]}}, "segment 0: unknown class 1"),
    ],
)
def test_json_errors(tmp_path, doc, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(EvalInputError, match=None) as err:
        read_segments_json(path)
    assert message in str(err.value) and str(path) in str(err.value)
    path.write_text("{not json")
    with pytest.raises(EvalInputError, match="not a readable JSON file"):
        read_segments_json(path)


# ---------------------------------------------------------------------------------------------- the command


def write_case(root):
    """Two videos, classes 1 and 2 (file ids): hand-computed pkummd figures in `expected`."""
    gt, pred = root / "gt", root / "pred"
    gt.mkdir()
    pred.mkdir()
    (gt / "a.txt").write_text("1,0,10,1\n1,20,30,1\n2,40,50,1\n")
    (gt / "b.txt").write_text("")  # a video without actions
    # class 1 (0-based 0): hits [0,10); duplicate -> FP; [22,30) IoU 0.8 -> hit.  AP = 1/2 + 1/3 at every
    # pkummd threshold.  class 2: one prediction in the empty video (FP) above one with IoU 1/3
    # ([40,50) vs [45,55): 5/15): AP@0.1 = AP@0.3 = 1/2 (precision 1/2 at recall 1), AP@0.5 = 0.
    (pred / "a.txt").write_text("1,0,10,0.9\n1,0,10,0.8\n1,22,30,0.7\n2,45,55,0.5\n")
    (pred / "b.txt").write_text("2,0,5,0.6\n")
    return gt, pred


def test_evaluate_end_to_end(tmp_path, capsys):
    gt, pred = write_case(tmp_path)
    out = tmp_path / "res" / "figures.json"
    code = main(
        ["evaluate", "--gt", str(gt), "--pred", str(pred), "--protocol", "pkummd", "--json", str(out)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    ap1 = 0.5 + 1 / 3
    assert res["mAP@0.1"] == pytest.approx((ap1 + 0.5) / 2)
    assert res["mAP@0.3"] == pytest.approx((ap1 + 0.5) / 2)
    assert res["mAP@0.5"] == pytest.approx(ap1 / 2)
    assert res["avg_mAP_0.1:0.5"] == pytest.approx(((ap1 + 0.5) / 2 * 2 + ap1 / 2) / 3)
    assert res["per_class"]["2"]["AP@0.5"] == 0.0  # keys are the class ids of the files
    assert res["per_class"]["1"]["num_pred"] == 3
    assert res["num_videos"] == 2 and res["num_gt"] == 3 and res["num_pred"] == 5
    assert "mAP@0.5" in printed and f"{100 * ap1 / 2:.2f}" in printed
    # continuous vs inclusive: [40,50] vs [45,55] inclusive is 6/16, still below 0.5
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--iou", "inclusive", "--per-class"]) == 0
    printed = capsys.readouterr().out
    assert "iou inclusive" in printed and "AP@0.7" in printed


def test_evaluate_json_inputs_with_names(tmp_path, capsys):
    gt = {"a": [Segment(0, 0, 10)], "b": [Segment(1, 5, 9)]}
    write_segments_json(tmp_path / "gt.json", gt, classes=["walk", "run", "jump"])
    write_segments_json(tmp_path / "pred.json", {"a": [Segment(0, 1, 10, 0.3)]})
    out = tmp_path / "r.json"
    assert main(["evaluate", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json"),
                 "--json", str(out)]) == 0  # fmt: skip
    res = json.loads(out.read_text())
    assert res["num_classes"] == 3 and set(res["per_class"]) == {"walk", "run"}
    assert res["mAP@0.5"] == pytest.approx(0.5) and res["mAP@0.7"] == pytest.approx(0.5)
    capsys.readouterr()


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "skelcl", "evaluate", *args], capture_output=True, text=True, timeout=120
    )


def test_evaluate_errors_without_traceback(tmp_path):
    gt, pred = write_case(tmp_path)
    (pred / "a.txt").write_text("1,0,10,0.9\n1,0,ten,0.8\n")
    proc = run_cli("--gt", str(gt), "--pred", str(pred))
    assert proc.returncode == 2
    assert f"{pred / 'a.txt'}:2: expected 'label,start,end[,score]'" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("c.txt", "1,0,5,0.5\n"), "predictions for 1 video(s) not in the ground truth: 'c'"),
        (("b.txt", "1,0,5,0.5\n3,0,5,0.5\n"), "b.txt:2: unknown class 3 (class ids in this file: 1..2)"),
    ],
)
def test_evaluate_unknown_video_or_class(tmp_path, capsys, change, message):
    gt, pred = write_case(tmp_path)
    (pred / change[0]).write_text(change[1])
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred)]) == 2
    assert message in capsys.readouterr().err
    # with --classes 3 the class is known (and absent from the ground truth), the video still is not
    if change[0] == "b.txt":
        assert main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--classes", "3"]) == 0


def test_evaluate_missing_inputs(tmp_path, capsys):
    gt, _ = write_case(tmp_path)
    assert main(["evaluate", "--gt", str(tmp_path / "nope"), "--pred", str(gt)]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["evaluate", "--gt", str(empty), "--pred", str(gt)]) == 2
    assert "no ground-truth videos" in capsys.readouterr().err


def test_label_below_base_without_class_count(tmp_path):
    (tmp_path / "v.txt").write_text("0,2,3\n")
    with pytest.raises(EvalInputError, match=r"v.txt:1: unknown class 0 \(class ids in this file: >= 1\)"):
        read_segments_dir(tmp_path)


def test_inclusive_end_reading(tmp_path):
    (tmp_path / "v.txt").write_text("1,0,9,1\n2,30,20,1\n")
    got = read_segments_dir(tmp_path, inclusive_end=True, swap_reversed=True)
    assert got == {"v": [Segment(0, 0, 10), Segment(1, 20, 31)]}
    write_segments_json(tmp_path / "s.json", {"v": [Segment(0, 0, 9)]})
    assert read_segments_json(tmp_path / "s.json", inclusive_end=True) == {"v": [Segment(0, 0, 10)]}


def test_pkummd_rows_read_like_the_dataset_reader(tmp_path):
    """A PKU-MMD label file read with inclusive_end gives the same segments as the dataset reader's
    per-frame labels (rows cover start..end inclusive) turned back into segments."""
    from skelcl.data import pkummd
    from skelcl.eval import segments_from_labels

    (tmp_path / "0291-M.txt").write_text("3,120,245,1\n51,400,300,2\n7,0,5,1\n3,250,260,1\n")
    rows, swapped = pkummd.read_labels(tmp_path / "0291-M.txt")
    labels, _, _ = pkummd.frame_labels(rows, 500)
    from_frames = segments_from_labels(labels, background=pkummd.BACKGROUND)
    from_file = read_segments_dir(tmp_path, inclusive_end=True, swap_reversed=True)["0291-M"]
    assert swapped == 1
    # the 4th column of ground truth is an annotation confidence, not a score: compare the ranges
    assert sorted((s.start, s.end, s.label) for s in from_file) == [
        (s.start, s.end, s.label) for s in from_frames
    ]


def test_evaluate_inclusive_end_flags(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    (gt / "v.txt").write_text("1,0,9,1\n")  # frames 0..9 inclusive
    (pred / "v.txt").write_text("1,0,10,0.5\n")  # half-open [0, 10)
    base = ["evaluate", "--gt", str(gt), "--pred", str(pred), "--protocol", "anet"]
    out = tmp_path / "r.json"
    assert main([*base, "--json", str(out)]) == 0
    assert json.loads(out.read_text())["mAP@0.95"] == 0.0  # IoU 9/10
    assert main([*base, "--gt-inclusive-end", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["mAP@0.95"] == 1.0
    assert main([*base, "--pred-inclusive-end", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["mAP@0.8"] == pytest.approx(1.0)  # IoU 9/11 = 0.82
    assert json.loads(out.read_text())["mAP@0.85"] == 0.0
    capsys.readouterr()


# ------------------------------------------------------------------- rejected and suspicious inputs


def test_evaluate_rejects_start_after_end(tmp_path, capsys):
    gt, pred = write_case(tmp_path)
    (pred / "a.txt").write_text("1,0,10,0.9\n1,30,22,0.7\n")
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred)]) == 2
    err = capsys.readouterr().err
    assert f"skelcl evaluate: error: {pred / 'a.txt'}:2: start 30 is after end 22" in err
    assert "--swap-reversed" in err
    # the ground truth too, and JSON files name video and segment
    (gt / "b.txt").write_text("2,9,3,1\n")
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--swap-reversed"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--gt", str(gt), "--pred", str(gt)]) == 2
    assert f"{gt / 'b.txt'}:1: start 9 is after end 3" in capsys.readouterr().err
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"label_base": 1, "videos": {"a": [[1, 0, 5], [1, 8, 6, 0.5]]}}))
    with pytest.raises(EvalInputError, match=r"video 'a', segment 1: start 8 is after end 6"):
        read_segments_json(path)
    assert read_segments_json(path, swap_reversed=True)["a"][1] == Segment(0, 6, 8, 0.5)


def test_evaluate_warns_on_empty_predictions(tmp_path, capsys):
    gt, pred = write_case(tmp_path)
    for f in pred.iterdir():
        f.unlink()
    out = tmp_path / "r.json"
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--json", str(out)]) == 0
    err = capsys.readouterr().err
    assert (
        f"skelcl evaluate: warning: {pred}: no NAME.txt files; every ground-truth segment counts as missed"
        in err
    )
    assert json.loads(out.read_text())["mAP@0.5"] == 0.0
    (pred / "a.txt").write_text("")
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred)]) == 0
    assert "the prediction files hold no segments" in capsys.readouterr().err
    # predictions with segments: no warning
    (tmp_path / "ok").mkdir()
    write_case(tmp_path / "ok")
    assert (
        main(["evaluate", "--gt", str(tmp_path / "ok" / "gt"), "--pred", str(tmp_path / "ok" / "pred")]) == 0
    )
    assert "warning" not in capsys.readouterr().err


def test_evaluate_label_base_mistakes(tmp_path, capsys):
    gt, pred = write_case(tmp_path)  # 1-based files, classes 1 and 2
    # read as 0-based: nothing fails, but class 0 is empty and every class shifted -> a warning
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--label-base", "0"]) == 0
    err = capsys.readouterr().err
    assert (
        "warning" in err and "no ground-truth segment has class id 0" in err and "use --label-base 1" in err
    )
    # 0-based files read as 1-based: id 0 is out of range -> an error with the hint
    (gt / "a.txt").write_text("0,0,10,1\n1,40,50,1\n")
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred)]) == 2
    err = capsys.readouterr().err
    assert f"{gt / 'a.txt'}:1: unknown class 0" in err and "--label-base 0" in err
    # the right base for each: no warning
    assert (
        main(["evaluate", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "gt"), "--label-base", "0"])
        == 0
    )
    assert "warning" not in capsys.readouterr().err


def test_folder_class_names(tmp_path, capsys):
    segs = {"a": [Segment(0, 0, 10, 0.9), Segment(2, 20, 30, 0.8)], "b": [Segment(1, 5, 9, 0.5)]}
    names = ["walk", "run", "jump"]
    written = write_segments_dir(tmp_path / "gt", segs, classes=names)
    assert written == ["a.txt", "b.txt", "classes.json"]
    doc = json.loads((tmp_path / "gt" / "classes.json").read_text())
    assert doc == {"format": "skelcl-classes", "label_base": 1, "classes": names}
    write_segments_dir(tmp_path / "pred", {"a": [Segment(0, 0, 10, 0.9)]}, classes=names)
    args = ["evaluate", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred")]
    assert main([*args, "--per-class"]) == 0
    table = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(table) if line.split()[:2] == ["id", "class"])
    rows = {line.split()[1]: line.split() for line in table[header + 1 :]}
    assert set(rows) == {"walk", "run", "jump"}
    assert rows["walk"][0] == "1" and rows["jump"][0] == "3"  # ids as in the files (1-based)
    assert rows["walk"][2:4] == ["1", "1"] and float(rows["walk"][4]) == 100.0  # gt, pred, AP@0.1
    # classes.json of another label base, and names that differ between the folders, are errors
    assert main([*args, "--label-base", "0"]) == 2
    assert f"{tmp_path / 'gt' / 'classes.json'}: the files' class ids start at 1" in capsys.readouterr().err
    write_segments_dir(tmp_path / "pred", {"a": []}, classes=["walk", "jog", "jump"])
    assert main(args) == 2
    assert "class names differ" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# Odd rows and --json folders (issue 22, item 6).


@pytest.mark.parametrize(
    ("row", "message"),
    [("1,-5,10,1", ":2: start -5 is negative"), ("1,-20,-5,1", ":2: start -20 is negative"),
     ("2,40,40,1", ":2: zero-length segment (start = end = 40)")],
)  # fmt: skip
def test_evaluate_refuses_odd_ground_truth_rows(tmp_path, capsys, row, message):
    gt, pred = write_case(tmp_path)
    (gt / "b.txt").write_text(f"2,60,70,1\n{row}\n")
    out = tmp_path / "r.json"
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--json", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("skelcl evaluate: error: ") and str(gt / "b.txt") + message in err[-1], err
    assert "Traceback" not in "\n".join(err) and not out.exists()


def test_zero_length_is_a_frame_where_ends_are_inclusive(tmp_path, capsys):
    gt, pred = write_case(tmp_path)
    (gt / "b.txt").write_text("2,40,40,1\n")
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--gt-inclusive-end"]) == 0
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--iou", "inclusive"]) == 0
    (gt / "b.txt").write_text("2,-1,4,1\n")  # negative under every reading
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--iou", "inclusive"]) == 2


def test_evaluate_warns_on_odd_predicted_rows(tmp_path, capsys):
    gt, pred = write_case(tmp_path)
    plain_json, odd_json = tmp_path / "plain.json", tmp_path / "odd.json"
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--json", str(plain_json)]) == 0
    plain = capsys.readouterr()
    (pred / "b.txt").write_text("2,0,5,0.6\n2,7,7,0.1\n1,-3,2,0.05\n")
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--json", str(odd_json)]) == 0
    got = capsys.readouterr()
    assert "warning: 2 predicted segment(s) with a negative start or zero length" in got.err
    assert f"{pred / 'b.txt'}:2: zero-length segment" in got.err and "(and 1 more)" in got.err
    assert "warning" not in plain.err
    # as given: the two extra rows are false positives below every true one (scores 0.1, 0.05)
    a, b = json.loads(plain_json.read_text()), json.loads(odd_json.read_text())
    assert b["num_pred"] == a["num_pred"] + 2
    assert {k: v for k, v in a.items() if "mAP" in k} == {k: v for k, v in b.items() if "mAP" in k}


def test_evaluate_json_only_into_an_existing_folder(tmp_path, capsys):
    gt, pred = write_case(tmp_path)
    deep = tmp_path / "no" / "such" / "dir" / "r.json"
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--json", str(deep)]) == 2
    err = capsys.readouterr().err
    assert f"neither its folder {deep.parent} nor the folder above exists" in err
    assert not (tmp_path / "no").exists()
    root = f"/skelcl-no-such-{os.getpid()}/sub/r.json"  # was: folders made at the filesystem root
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--json", root]) == 2
    assert not os.path.exists(os.path.dirname(os.path.dirname(root)))
    # one new folder under an existing one is fine
    one = tmp_path / "new" / "r.json"
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--json", str(one)]) == 0
    assert one.is_file()
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--json", str(tmp_path)]) == 2
    assert "that is a folder" in capsys.readouterr().err
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["gt"] == str(gt)
