"""`skelcl synth / info / show` as a user runs them, including the error paths."""

import subprocess
import sys

import numpy as np
import pytest

from skelcl.data import open_cache


def skelcl(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "skelcl", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "syn"
    r = skelcl("synth", "--out", out, "--sequences", 12, "--seed", 4)
    assert r.returncode == 0, r.stderr
    return out


def test_synth_writes_a_cache_matching_the_generator(small_cache):
    from skelcl.data.synthetic import generate

    ds = open_cache(small_cache)
    assert len(ds) == 12
    assert ds.classes[-1] == "background"
    ref = list(generate(12, seed=4))
    for i in (0, 11):
        np.testing.assert_array_equal(ds[i].labels, ref[i].labels)
        np.testing.assert_array_equal(ds[i].joints[:, : ref[i].joints.shape[1]], ref[i].joints)
    train, test = ds.split("xsub", "train"), ds.split("xsub", "test")
    assert len(train) + len(test) == 12
    assert set(ds.attr("subject")[test] % 5) <= {4}


def test_info_prints_counts_and_histogram(small_cache):
    r = skelcl("info", small_cache)
    assert r.returncode == 0, r.stderr
    ds = open_cache(small_cache)
    assert "sequences  12" in r.stdout
    assert f"frames     {int(ds.lengths.sum())}" in r.stdout
    for name in ds.classes:
        assert name in r.stdout


def test_show_writes_an_image(small_cache, tmp_path):
    out = tmp_path / "seq.png"
    r = skelcl("show", small_cache, "--index", 2, "--out", out)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (("info", "{tmp}/missing"), "no such cache directory"),
        (("show", "{cache}", "--index", "99", "--out", "{tmp}/x.png"), "out of range"),
        (("show", "{cache}", "--out", "{tmp}/x.txt"), ".png"),
        (("synth", "--out", "{cache}"), "already exists"),
        (("info", "{tmp}/notcache"), "meta.json"),
    ],
)
def test_errors_are_one_clear_line(small_cache, tmp_path, args, message):
    (tmp_path / "notcache").mkdir()
    args = [a.format(tmp=tmp_path, cache=small_cache) for a in args]
    r = skelcl(*args)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], r.stderr


def test_bad_arguments_exit_nonzero_without_traceback():
    r = skelcl("synth", "--out", "x", "--sequences", "zero")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--sequences" in r.stderr
