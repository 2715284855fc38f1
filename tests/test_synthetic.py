"""The synthetic generator: determinism, labels vs plan, kinematics, difficulty."""

import numpy as np
import pytest

from skelcl.data.skeleton import PARENT, bone_lengths
from skelcl.data.synthetic import (
    ACTIONS,
    BACKGROUND,
    CLASSES,
    SynthConfig,
    generate,
    make_subjects,
    segments_of,
)


def test_same_seed_same_data_and_independent_of_chunking():
    a = list(generate(12, seed=3, chunk=5))
    b = list(generate(12, seed=3, chunk=64))
    c = list(generate(4, seed=3, start=8))
    for x, y in zip(a, b):
        assert x.name == y.name
        np.testing.assert_array_equal(x.joints, y.joints)
        np.testing.assert_array_equal(x.labels, y.labels)
    for x, y in zip(a[8:], c):
        np.testing.assert_array_equal(x.joints, y.joints)


def test_different_seeds_differ():
    a = next(generate(1, seed=0))
    b = next(generate(1, seed=1))
    assert a.joints.shape != b.joints.shape or not np.allclose(a.joints, b.joints)


def test_shapes_dtypes_and_lengths():
    cfg = SynthConfig(length=(100, 140))
    for seq in generate(20, seed=0, config=cfg):
        T = len(seq.labels)
        assert 100 <= T <= 140
        assert seq.joints.dtype == np.float32 and seq.labels.dtype == np.int64
        assert seq.joints.shape[0] == T and seq.joints.shape[2:] == (25, 3)
        assert seq.joints.shape[1] in (1, 2)
        assert np.isfinite(seq.joints).all()
        assert seq.labels.min() >= 0 and seq.labels.max() <= BACKGROUND


def test_labels_match_segments_and_transitions_are_background():
    for seq in generate(30, seed=5):
        rebuilt = np.full(len(seq.labels), BACKGROUND)
        for cls, start, end in seq.segments:
            assert 0 <= cls < len(ACTIONS)
            assert 0 <= start < end <= len(seq.labels)
            rebuilt[start:end] = cls
        np.testing.assert_array_equal(rebuilt, seq.labels)
    # segments_of on a hand-made label row
    labels = np.array([12, 0, 0, 12, 12, 3, 3, 3, 5, 12])
    assert segments_of(labels, background=12) == [(0, 1, 3), (3, 5, 8), (5, 8, 9)]


def test_every_class_and_background_occur():
    labels = np.concatenate([s.labels for s in generate(200, seed=0)])
    counts = np.bincount(labels, minlength=len(CLASSES))
    assert (counts > 0).all()
    # background (transitions and other motions) is a real share but not most of the data
    assert 0.1 < counts[BACKGROUND] / counts.sum() < 0.5


def test_bone_lengths_constant_per_subject_without_noise():
    seqs = list(generate(10, seed=2, noise=False))
    subjects = make_subjects(SynthConfig().num_subjects, seed=2)
    for seq in seqs:
        lengths = bone_lengths(seq.joints[:, 0].astype(np.float64))  # (T, 24)
        expected = subjects[seq.subject].bones[np.flatnonzero(PARENT >= 0)]
        np.testing.assert_allclose(lengths, np.broadcast_to(expected, lengths.shape), rtol=1e-4, atol=1e-5)


def test_bone_lengths_constant_within_noise():
    for seq in generate(10, seed=4):
        keep = ~seq.dropped
        lengths = bone_lengths(seq.joints[keep, 0].astype(np.float64))
        # the difference of two noisy points has std sigma * sqrt(2) per axis; a bone's length varies less
        assert lengths.std(axis=0).max() < 3 * seq.noise_sigma * np.sqrt(2) + 1e-4


def test_same_subject_same_bones_across_sequences():
    seqs = [s for s in generate(80, seed=0, noise=False)]
    by_subject = {}
    for s in seqs:
        by_subject.setdefault(s.subject, []).append(bone_lengths(s.joints[0, 0].astype(np.float64)))
    repeated = [v for v in by_subject.values() if len(v) > 1]
    assert repeated, "expected some subject to appear twice in 80 sequences"
    for v in repeated:
        np.testing.assert_allclose(v[0], v[1], rtol=1e-4)
    # and different subjects differ
    firsts = np.stack([v[0] for v in by_subject.values()])
    assert firsts.std(axis=0).max() > 0.01


def test_dropped_frames_are_zero_and_keep_labels():
    seqs = [s for s in generate(60, seed=1) if s.dropped.any()]
    assert seqs, "some sequences should have dropped frames"
    for s in seqs:
        assert (s.joints[s.dropped] == 0).all()
        assert (np.abs(s.joints[~s.dropped, 0]).sum(axis=(1, 2)) > 0).all()


def test_feet_on_the_ground_when_standing():
    cfg = SynthConfig(two_body_prob=0.0)
    for seq in generate(10, seed=0, config=cfg, noise=False):
        stand = seq.labels == ACTIONS.index("stand")
        if not stand.any():
            continue
        # spine axis points up in the first body: head above spine base in every standing frame
        head, base = seq.joints[stand, 0, 3], seq.joints[stand, 0, 0]
        assert (np.linalg.norm(head - base, axis=1) > 0.4).all()


def test_single_frame_is_not_enough():
    """A nearest-class-mean classifier on single normalized poses must not solve the task (it is
    meant to need temporal context), while being clearly above chance."""
    from skelcl.data.normalize import normalize_sequence

    def features(seqs):
        X, y = [], []
        for s in seqs:
            j = normalize_sequence(s.joints)[:, 0]  # (T, 25, 3)
            X.append(j.reshape(len(j), -1))
            y.append(s.labels)
        return np.concatenate(X), np.concatenate(y)

    Xtr, ytr = features(generate(150, seed=10))
    Xte, yte = features(generate(60, seed=11))
    means = np.stack([Xtr[ytr == c].mean(0) for c in range(len(CLASSES))])
    pred = np.argmin(((Xte[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    acc = (pred == yte).mean()
    assert 1 / len(CLASSES) < acc < 0.6, acc


@pytest.mark.parametrize("bad", [{"length": (0, 10)}, {"length": (50, 10)}, {"num_subjects": 0}])
def test_bad_config_is_a_clear_error(bad):
    from skelcl.errors import SkelclError

    with pytest.raises(SkelclError):
        next(generate(1, seed=0, config=SynthConfig(**bad)))
