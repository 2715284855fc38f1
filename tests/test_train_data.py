"""Batching helpers: snippet alignment between augmented views, epoch order."""

import copy

import numpy as np

from skelcl import augment
from skelcl.train.data import epoch_batches, snippet_alignment


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
        if p.lengths[b] < 300:  # mirrored windows are not monotone in time
            continue
        assert np.all(np.diff(al[b]) >= 0)
        T = sq.shape[1]
        for s in range(S):
            lo, hi = int(np.floor(s * T / S)), int(np.ceil((s + 1) * T / S))
            cq = sq[b, lo:hi].mean()
            ck = [sk[b, int(np.floor(j * T / S)) : int(np.ceil((j + 1) * T / S))].mean() for j in range(S)]
            assert abs(ck[al[b, s]] - cq) <= min(abs(c - cq) for c in ck) + 1e-9


def test_epoch_batches_cover_the_data_once_and_depend_on_epoch():
    a = epoch_batches(10, 4, seed=1, epoch=0, drop_last=False)
    assert sorted(np.concatenate(a).tolist()) == list(range(10)) and [len(x) for x in a] == [4, 4, 2]
    assert [len(x) for x in epoch_batches(10, 4, 1, 0, drop_last=True)] == [4, 4]
    b = epoch_batches(10, 4, seed=1, epoch=1, drop_last=False)
    assert not all(np.array_equal(x, y) for x, y in zip(a, b))
    assert all(np.array_equal(x, y) for x, y in zip(a, epoch_batches(10, 4, 1, 0, drop_last=False)))
