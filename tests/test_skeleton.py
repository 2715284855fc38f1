"""NTU-25 skeleton tables, the ST-GCN spatial graph and NTU-style normalization."""

import numpy as np
import pytest

from skelcl.data.normalize import fill_empty_frames, normalize_sequence
from skelcl.data.skeleton import CENTER, EDGES, FLIP_PERM, NUM_JOINTS, PARENT, hop_distance, spatial_adjacency
from skelcl.errors import SkelclError


def test_tree_and_edges_are_consistent():
    assert len(EDGES) == NUM_JOINTS - 1
    # the kinematic tree reaches every joint from the root without cycles
    for j in range(NUM_JOINTS):
        seen, k = set(), j
        while PARENT[k] >= 0:
            assert k not in seen
            seen.add(k)
            k = PARENT[k]
        assert k == 0
    assert np.isfinite(hop_distance()).all()


def test_flip_is_an_involution_that_swaps_sides():
    assert (FLIP_PERM[FLIP_PERM] == np.arange(NUM_JOINTS)).all()
    assert FLIP_PERM[4] == 8 and FLIP_PERM[12] == 16 and FLIP_PERM[0] == 0


def test_spatial_adjacency_partitions_neighbourhoods():
    A = spatial_adjacency()
    assert A.shape == (3, 25, 25) and A.dtype == np.float32
    # the three partitions are disjoint and together cover exactly self + 1-hop neighbours
    support = (A > 0).astype(int)
    assert support.sum(0).max() == 1
    hops = hop_distance()
    np.testing.assert_array_equal(support.sum(0), (hops <= 1).astype(int))
    # columns average over the neighbourhood
    np.testing.assert_allclose(A.sum(axis=(0, 1)), 1.0, rtol=1e-6)
    # hand-checked cases: joint 3 (head) has neighbour 2 (neck), which is closer to the centre
    assert A[1, 2, 3] > 0 and A[0, 3, 3] > 0
    # the centre has no closer neighbour, and every neighbour of it is farther
    assert A[1, :, CENTER].sum() == 0
    assert A[2, 1, CENTER] > 0 and A[2, 2, CENTER] > 0
    # degree normalization: the elbow (5) has 3 neighbours incl. itself
    assert A[:, :, 5].sum(0)[4] == pytest.approx(1 / 3)


def _random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def test_normalization_aligns_bones_and_is_rotation_invariant():
    from skelcl.data.synthetic import generate

    rng = np.random.default_rng(0)
    seq = next(generate(1, seed=7, noise=False)).joints
    norm = normalize_sequence(seq)
    first = norm[0, 0]
    spine = first[1] - first[0]
    shoulder = first[4] - first[8]
    assert np.allclose(spine / np.linalg.norm(spine), [0, 0, 1], atol=1e-5)
    assert shoulder[0] > 0 and abs(shoulder[1]) < 1e-5
    np.testing.assert_allclose(norm[:, 0, 1], 0, atol=1e-5)  # spine_mid at the origin in every frame
    # any rigid motion of the input gives the same normalized output
    R = _random_rotation(rng)
    moved = seq @ R.T + rng.normal(size=3)
    np.testing.assert_allclose(normalize_sequence(moved), norm, atol=2e-4)
    # bone lengths are preserved
    from skelcl.data.skeleton import bone_lengths

    np.testing.assert_allclose(bone_lengths(norm[:, 0]), bone_lengths(seq[:, 0]), rtol=1e-4)


def test_empty_frames_filled_from_neighbours():
    rng = np.random.default_rng(1)
    j = rng.normal(size=(6, 1, 25, 3))
    j[[0, 3, 4]] = 0
    filled, count = fill_empty_frames(j)
    assert count == 3
    np.testing.assert_array_equal(filled[0], j[1])
    np.testing.assert_array_equal(filled[3], j[2])
    np.testing.assert_array_equal(filled[4], j[2])
    with pytest.raises(SkelclError, match="no non-empty frame"):
        fill_empty_frames(np.zeros((3, 1, 25, 3)))


def test_second_body_absent_stays_zero():
    from skelcl.data.synthetic import generate

    seq = next(generate(1, seed=7, noise=False)).joints
    two = np.concatenate([seq[:, :1], np.zeros_like(seq[:, :1])], axis=1)
    assert (normalize_sequence(two)[:, 1] == 0).all()


def test_degenerate_reference_frame_is_an_error():
    j = np.zeros((2, 1, 25, 3))
    j[:, 0, 5] = 1.0  # non-empty, but spine bone of zero length
    with pytest.raises(SkelclError, match="spine"):
        normalize_sequence(j)
