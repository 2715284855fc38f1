"""Batching helpers: snippet alignment between augmented views, epoch order."""

import copy

import numpy as np
import pytest

from skelcl import augment
from skelcl.data import open_cache
from skelcl.data.synthetic import SynthConfig, generate_cache
from skelcl.errors import SkelclError
from skelcl.train.data import SequenceStore, epoch_batches, snippet_alignment


def _params(seed=0, B=6):
    lengths = np.array([300, 250, 400, 120, 300, 333])[:B]
    return augment.sample("skeletonclr", lengths, np.random.default_rng(seed))


def test_alignment_of_a_view_with_itself_is_the_identity():
    p = augment.sample("skeletonclr", np.array([300, 310, 400, 350, 300, 333]), np.random.default_rng(0))
    p.views[1] = copy.deepcopy(p.views[0])
    assert np.array_equal(snippet_alignment(p, 19), np.tile(np.arange(19), (6, 1)))


def test_alignment_is_monotone_and_points_to_the_nearest_time():
    """Both views move forward in time, so aligned indices never decrease along the query snippets; and the
    chosen key snippet's mean source frame is the closest one (checked with an explicit loop)."""
    p = _params(3)
    S = 19
    al = snippet_alignment(p, S)
    assert al.shape == (6, S)
    sq, sk = augment.source_frames(p, 0), augment.source_frames(p, 1)
    for b in range(6):
        kept = al[b][al[b] >= 0]
        assert np.all(np.diff(kept) >= 0)
        T = sq.shape[1]
        for s in range(S):
            lo, hi = int(np.floor(s * T / S)), int(np.ceil((s + 1) * T / S))
            cq = sq[b, lo:hi].mean()
            kbins = [sk[b, int(np.floor(j * T / S)) : int(np.ceil((j + 1) * T / S))] for j in range(S)]
            ck = [x.mean() for x in kbins]
            nearest = int(np.argmin([abs(c - cq) for c in ck]))
            if al[b, s] < 0:  # no counterpart: the centre lies outside the nearest key snippet's frames
                assert cq < kbins[nearest].min() - 1 or cq > kbins[nearest].max() + 1
            else:
                assert abs(ck[al[b, s]] - cq) <= min(abs(c - cq) for c in ck) + 1e-9
                assert kbins[al[b, s]].min() - 1 <= cq <= kbins[al[b, s]].max() + 1


def test_alignment_of_tempo_views_leaves_out_the_uncovered_half():
    """The 2x view spans 300 frames, the 1x view 150 of them: a 1x query nearly always has a counterpart
    (not always: each view has its own crop shift), a 2x query only for about half of its snippets, and
    the left-out ones lie outside the 1x view's time range."""
    p = augment.sample("aimclr", np.full(64, 600), np.random.default_rng(5))  # query and key: the 2 tempos
    al = snippet_alignment(p, 19)
    speed_q = p.views[0].speed
    assert (al[speed_q == 1] >= 0).mean() > 0.9
    share = (al[speed_q == 2] >= 0).mean()
    assert 0.4 < share < 0.65, share
    sk = augment.source_frames(p, 1)
    sq = augment.source_frames(p, 0)
    for b in np.flatnonzero(speed_q == 2):
        T = sq.shape[1]
        for s in np.flatnonzero(al[b] < 0):
            cq = sq[b, (s * T) // 19 : -((-(s + 1) * T) // 19)].mean()
            assert cq < sk[b].min() or cq > sk[b].max()


def test_epoch_batches_cover_the_data_once_and_depend_on_epoch():
    a = epoch_batches(10, 4, seed=1, epoch=0, drop_last=False)
    assert sorted(np.concatenate(a).tolist()) == list(range(10)) and [len(x) for x in a] == [4, 4, 2]
    assert [len(x) for x in epoch_batches(10, 4, 1, 0, drop_last=True)] == [4, 4]
    b = epoch_batches(10, 4, seed=1, epoch=1, drop_last=False)
    assert not all(np.array_equal(x, y) for x, y in zip(a, b))
    assert all(np.array_equal(x, y) for x, y in zip(a, epoch_batches(10, 4, 1, 0, drop_last=False)))


def test_sequence_store_keeps_at_most_max_bytes_and_returns_the_same_data(tmp_path):
    """A bounded store drops least recently used sequences but serves exactly what an unbounded one does."""
    data = generate_cache(tmp_path / "c", 8, 1, config=SynthConfig(length=(40, 60)), progress=False)
    cache = open_cache(data)
    full = SequenceStore(cache)
    sizes = [full.get(i)[0].nbytes + full.get(i)[1].nbytes for i in range(len(cache))]
    assert full.kept_bytes == sum(sizes)
    budget = max(sizes) * 3
    small = SequenceStore(cache, max_bytes=budget)
    order = [0, 1, 2, 3, 0, 4, 5, 6, 7, 2, 0]
    for i in order:
        j, lab = small.get(i)
        assert np.array_equal(j, full.get(i)[0]) and np.array_equal(lab, full.get(i)[1])
        assert small.kept_bytes <= budget
    assert 0 in small._kept  # the most recent visit survives
    none = SequenceStore(cache, max_bytes=0)
    none.get(3)
    assert none.kept_bytes == 0 and len(none._kept) == 0
    with pytest.raises(SkelclError, match="memory_mb"):
        SequenceStore.from_config(cache, {"bodies": 1, "memory_mb": -1})
