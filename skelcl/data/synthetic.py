"""Procedural untrimmed skeleton sequences with exact per-frame labels: the built-in dataset.

Each sequence is a person (NTU-25 joints, metres, Kinect-style camera coordinates: x right, y up, z away
from the camera, 30 fps) performing several action runs from a vocabulary of 12 classes, joined by blended
transitions and by "other" motions that are not in the vocabulary; both are labeled background (class 12).
The classes mirror BABEL's three subsets and include confusable groups: walk / jog / run differ mainly in
tempo and amplitude, with per-subject speed variation making the ranges overlap; wave / gesture are both
one-arm oscillations at different heights; stand / turn differ only by a slow change of heading; sit /
stand up are each other's time reversal. A single frame rarely tells the class: temporal context is needed.

How a sequence is made:
1. A subject (one of `num_subjects`, fixed per seed) has bone lengths (overall height and per-bone
   proportions), a speed factor, an amplitude factor, an arm-swing style and a posture lean.
2. A plan: runs of actions and background motions with random lengths, a transition between each pair.
3. Every frame gets a vector of 22 motion parameters (`DOF`: walking speed, turning rate, torso lean and
   twist, head nod, hip / knee / shoulder / elbow angles, ...) from its motion's procedural curve; in a
   transition the two neighbouring motions' parameters are blended with a smoothstep weight.
4. Forward kinematics turns the parameters into joints: every joint is its parent plus bone length times
   a unit direction, so bone lengths are exactly constant per subject before noise. Feet are put on the
   ground (jumps lift them), heading and position integrate the turning rate and speeds.
5. Camera: random pitch, roll and offset; then Gaussian sensor noise (per-sequence sigma) and, in some
   sequences, short bursts of dropped frames (all joints zero, as when a Kinect loses track; the frames
   keep their labels). A fifth of the sequences carry a second person doing background motions beside
   the first (body slot 1); labels always describe body 0.

Everything is vectorized over all frames of a chunk of sequences; sequence i depends only on (seed, i).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skelcl.data.cache import CacheWriter
from skelcl.data.skeleton import NUM_JOINTS, PARENT
from skelcl.errors import SkelclError

FPS = 30.0
ACTIONS = (
    "walk", "stand", "turn", "jump",  # BABEL subset 1
    "sit", "run", "stand_up", "kick",  # subset 2
    "jog", "wave", "dance", "gesture",  # subset 3
)  # fmt: skip
CLASSES = ACTIONS + ("background",)
BACKGROUND = len(ACTIONS)
OTHER_MOTIONS = ("bend", "stretch", "look", "scratch", "clap")  # background, not in the vocabulary
MOTIONS = ACTIONS + OTHER_MOTIONS
DISTRACTOR_MOTIONS = ("stand", "look", "gesture", "clap", "scratch")

# Motion parameters (degrees of freedom) per frame.
DOF_NAMES = (
    "speed", "yaw_rate", "side_speed", "bob", "lean", "twist", "nod",
    "hip_flex_l", "hip_abd_l", "knee_l", "hip_flex_r", "hip_abd_r", "knee_r",
    "sh_flex_l", "sh_abd_l", "elbow_l", "fore_abd_l", "sh_flex_r", "sh_abd_r", "elbow_r", "fore_abd_r",
)  # fmt: skip
D = {name: i for i, name in enumerate(DOF_NAMES)}
NUM_DOF = len(DOF_NAMES)
_LEFT = [D[n] for n in DOF_NAMES if n.endswith("_l")]
_RIGHT = [D[n[:-2] + "_r"] for n in DOF_NAMES if n.endswith("_l")]

# Template bone lengths (metres) for a 1.75 m adult, indexed by child joint (PARENT gives the parent).
_TEMPLATE = {
    1: 0.26, 20: 0.22, 2: 0.07, 3: 0.14,  # spine_mid, spine_shoulder, neck, head
    4: 0.17, 5: 0.28, 6: 0.25, 7: 0.07, 21: 0.08, 22: 0.05,  # left arm
    8: 0.17, 9: 0.28, 10: 0.25, 11: 0.07, 23: 0.08, 24: 0.05,  # right arm
    12: 0.09, 13: 0.43, 14: 0.41, 15: 0.12,  # left leg
    16: 0.09, 17: 0.43, 18: 0.41, 19: 0.12,  # right leg
}  # fmt: skip
_MIRROR_BONE = {5: 9, 6: 10, 7: 11, 21: 23, 22: 24, 4: 8, 13: 17, 14: 18, 15: 19, 12: 16}
ANKLE_HEIGHT = 0.07


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of the generator (lengths in frames at 30 fps)."""

    num_subjects: int = 40
    length: tuple[int, int] = (240, 360)
    action_length: tuple[int, int] = (45, 110)
    other_length: tuple[int, int] = (20, 60)
    transition_length: tuple[int, int] = (8, 20)
    other_prob: float = 0.3  # chance of a background motion run before each action run
    two_body_prob: float = 0.2
    noise_sigma: tuple[float, float] = (0.004, 0.015)  # metres, per sequence
    drop_prob: float = 0.3  # chance that a sequence has dropped-frame bursts
    test_every: int = 5  # subjects s with s % test_every == test_every - 1 form the xsub test part


@dataclass
class Subject:
    bones: np.ndarray  # (25,) bone length per child joint (0 for the root)
    speed: float
    amplitude: float
    arm_style: float
    lean: float


@dataclass
class SynthSequence:
    """One generated sequence with its ground truth."""

    name: str
    joints: np.ndarray  # float32 (T, M, 25, 3), M = number of bodies (1 or 2)
    labels: np.ndarray  # int64 (T,)
    segments: list = field(default_factory=list)  # (class, start, end) action runs, end exclusive
    subject: int = 0
    noise_sigma: float = 0.0
    dropped: np.ndarray | None = None  # bool (T,): frames whose joints were zeroed


def make_subjects(num_subjects: int, seed: int) -> list[Subject]:
    """Subjects of one seed: bone lengths and motion style."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7_777_777]))
    subjects = []
    for _ in range(num_subjects):
        height = rng.uniform(0.85, 1.12)
        bones = np.zeros(NUM_JOINTS)
        for child, length in _TEMPLATE.items():
            if child in _MIRROR_BONE.values():
                continue
            bones[child] = length * height * rng.uniform(0.94, 1.06)
        for left, right in _MIRROR_BONE.items():
            bones[right] = bones[left]
        subjects.append(
            Subject(
                bones=bones,
                speed=rng.uniform(0.85, 1.15),
                amplitude=rng.uniform(0.8, 1.2),
                arm_style=rng.uniform(0.5, 1.3),
                lean=rng.uniform(-0.03, 0.08),
            )
        )
    return subjects


# ---------------------------------------------------------------------------------------------------
# Procedural motion curves. Each takes t (n,) seconds since its run started (may be < 0 or past the end
# inside transitions), dur (n,) the run's duration, u (n, 6) uniform per-run randomness and s (n, 4)
# subject style (speed, amplitude, arm style, lean), and returns DOF values (n, NUM_DOF).
# ---------------------------------------------------------------------------------------------------


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _gait(t, u, s, freq, hip, knee, arm, elbow, lean, bob, speed):
    """Walking-like gait. Subject and per-run jitter make walk / jog / run overlap in pose and tempo."""
    out = np.zeros((len(t), NUM_DOF))
    sf, amp, arm_style, lean0 = s.T
    f = freq * sf * (0.93 + 0.14 * u[:, 0])
    a = amp * (0.85 + 0.3 * u[:, 1])
    p = 2 * np.pi * f * t + 2 * np.pi * u[:, 2]
    swing = np.sin(p)
    elbow = elbow + 0.3 * (arm_style - 0.9) + 0.3 * (u[:, 4] - 0.5)
    out[:, D["hip_flex_l"]] = hip * a * swing
    out[:, D["hip_flex_r"]] = -hip * a * swing
    out[:, D["knee_l"]] = knee * a * (0.5 + 0.5 * np.sin(p + 1.6)) ** 2 + 0.05
    out[:, D["knee_r"]] = knee * a * (0.5 - 0.5 * np.sin(p + 1.6)) ** 2 + 0.05
    out[:, D["sh_flex_l"]] = -arm * a * arm_style * swing
    out[:, D["sh_flex_r"]] = arm * a * arm_style * swing
    out[:, D["sh_abd_l"]] = out[:, D["sh_abd_r"]] = 0.12
    out[:, D["elbow_l"]] = elbow + 0.25 * arm * (0.5 + 0.5 * swing)
    out[:, D["elbow_r"]] = elbow + 0.25 * arm * (0.5 - 0.5 * swing)
    out[:, D["lean"]] = lean + lean0
    out[:, D["bob"]] = bob * a * np.abs(np.cos(p))
    out[:, D["speed"]] = speed * f
    out[:, D["yaw_rate"]] = (u[:, 3] - 0.5) * 0.012  # gentle curve
    return out


def _walk(t, dur, u, s):
    return _gait(t, u, s, freq=0.95, hip=0.40, knee=0.9, arm=0.35, elbow=0.35, lean=0.04, bob=0.02, speed=1.4)


def _jog(t, dur, u, s):
    return _gait(
        t, u, s, freq=1.25, hip=0.50, knee=1.15, arm=0.45, elbow=0.85, lean=0.08, bob=0.04, speed=1.8
    )


def _run(t, dur, u, s):
    return _gait(
        t, u, s, freq=1.50, hip=0.62, knee=1.35, arm=0.55, elbow=1.05, lean=0.12, bob=0.06, speed=2.2
    )


def _rest(t, u, s, sway=1.0):
    """Standing at rest with a slow sway (the base of several motions)."""
    out = np.zeros((len(t), NUM_DOF))
    p = 2 * np.pi * (0.25 + 0.2 * u[:, 4]) * t + 2 * np.pi * u[:, 2]
    out[:, D["lean"]] = s[:, 3] + 0.02 * sway * np.sin(p)
    out[:, D["hip_abd_l"]] = 0.04 + 0.02 * sway * np.sin(p)
    out[:, D["hip_abd_r"]] = 0.04 - 0.02 * sway * np.sin(p)
    out[:, D["knee_l"]] = out[:, D["knee_r"]] = 0.05
    out[:, D["sh_abd_l"]] = out[:, D["sh_abd_r"]] = 0.1
    out[:, D["elbow_l"]] = out[:, D["elbow_r"]] = 0.12 + 0.04 * sway * np.sin(p + 1)
    out[:, D["sh_flex_l"]] = 0.03 * sway * np.sin(p + 2)
    out[:, D["sh_flex_r"]] = 0.03 * sway * np.sin(p + 3)
    out[:, D["nod"]] = 0.05 * sway * np.sin(0.7 * p)
    return out


def _stand(t, dur, u, s):
    return _rest(t, u, s)


def _turn(t, dur, u, s):
    out = _rest(t, u, s)
    direction = np.where(u[:, 0] < 0.5, -1.0, 1.0)
    angle = np.pi * (0.5 + 0.5 * u[:, 1])
    x = np.clip(t / dur, 0.0, 1.0)
    inside = (t >= 0) & (t <= dur)
    out[:, D["yaw_rate"]] = inside * direction * angle / (dur * FPS) * (1 - np.cos(2 * np.pi * x))
    step = np.sin(2 * np.pi * 1.1 * s[:, 0] * t)
    out[:, D["hip_flex_l"]] = 0.18 * np.maximum(step, 0) * inside
    out[:, D["hip_flex_r"]] = 0.18 * np.maximum(-step, 0) * inside
    out[:, D["knee_l"]] += 0.35 * np.maximum(step, 0) * inside
    out[:, D["knee_r"]] += 0.35 * np.maximum(-step, 0) * inside
    return out


def _jump(t, dur, u, s):
    out = _rest(t, u, s, sway=0.3)
    period = 0.8 + 0.3 * u[:, 0]
    c = np.mod(t, period) / period
    crouch = np.where(c < 0.35, np.sin(np.pi * c / 0.35), 0.0) + np.where(
        c > 0.8, np.sin(np.pi * (c - 0.8) / 0.2) * 0.5, 0
    )
    flight = np.where((c >= 0.35) & (c < 0.75), np.sin(np.pi * (c - 0.35) / 0.4), 0.0)
    height = (0.15 + 0.2 * u[:, 1]) * s[:, 1]
    out[:, D["bob"]] = height * flight
    for side in ("l", "r"):
        out[:, D[f"hip_flex_{side}"]] = 0.7 * crouch + 0.1 * flight
        out[:, D[f"knee_{side}"]] = 1.3 * crouch + 0.2 * flight
        out[:, D[f"sh_flex_{side}"]] = -0.5 * crouch + 2.0 * flight
        out[:, D[f"elbow_{side}"]] = 0.3 + 0.3 * crouch
    out[:, D["lean"]] += 0.35 * crouch
    return out


def _seated_amount(t, dur, u, rising: bool):
    descent = 0.8 + 0.6 * u[:, 0]
    x = _smoothstep(t / descent)
    return (1 - x) if rising else x, np.sin(np.pi * np.clip(t / descent, 0, 1))


def _sit_pose(out, amount, move):
    for side in ("l", "r"):
        out[:, D[f"hip_flex_{side}"]] = 1.5 * amount
        out[:, D[f"knee_{side}"]] = 1.5 * amount + 0.05
        out[:, D[f"sh_flex_{side}"]] = 0.35 * amount
        out[:, D[f"elbow_{side}"]] = 0.15 + 0.6 * amount
    out[:, D["lean"]] += 0.1 * amount + 0.45 * move
    return out


def _sit(t, dur, u, s):
    amount, move = _seated_amount(t, dur, u, rising=False)
    return _sit_pose(_rest(t, u, s, sway=0.4), amount, move)


def _stand_up(t, dur, u, s):
    amount, move = _seated_amount(t, dur, u, rising=True)
    return _sit_pose(_rest(t, u, s, sway=0.4), amount, move)


def _kick(t, dur, u, s):
    out = _rest(t, u, s, sway=0.3)
    period = 1.0 + 0.4 * u[:, 0]
    c = np.mod(t, period) / period
    bump = np.sin(np.pi * np.clip(c / 0.6, 0, 1))
    early = np.sin(np.pi * np.clip(c / 0.3, 0, 1))
    out[:, D["hip_flex_l"]] = (1.0 + 0.5 * u[:, 1]) * s[:, 1] * bump
    out[:, D["knee_l"]] = 1.2 * early + 0.05
    out[:, D["sh_abd_l"]] = out[:, D["sh_abd_r"]] = 0.3 + 0.4 * bump
    out[:, D["lean"]] -= 0.15 * bump
    return out


def _wave(t, dur, u, s):
    out = _rest(t, u, s, sway=0.5)
    raise_ = _smoothstep(t / 0.4) * _smoothstep((dur - t) / 0.4)
    freq = 1.5 + u[:, 0]
    out[:, D["sh_abd_l"]] = 0.1 + raise_ * (1.5 + 1.2 * u[:, 1])
    out[:, D["sh_flex_l"]] = raise_ * 0.3
    out[:, D["elbow_l"]] = 0.1 + raise_ * 0.4
    out[:, D["fore_abd_l"]] = raise_ * 0.5 * s[:, 1] * np.sin(2 * np.pi * freq * t + 6 * u[:, 2])
    return out


def _gesture(t, dur, u, s):
    out = _rest(t, u, s, sway=0.6)
    raise_ = _smoothstep(t / 0.5) * _smoothstep((dur - t) / 0.5)
    f1, f2 = 0.8 + 0.8 * u[:, 0], 0.6 + 0.9 * u[:, 3]
    both = u[:, 4] < 0.4
    for side, on in (("l", np.ones(len(t), bool)), ("r", both)):
        r = raise_ * on
        out[:, D[f"sh_flex_{side}"]] += r * (0.5 + 0.4 * u[:, 1] + 0.2 * s[:, 1] * np.sin(2 * np.pi * f1 * t))
        out[:, D[f"sh_abd_{side}"]] += r * 0.2
        out[:, D[f"elbow_{side}"]] += r * (0.8 + 0.5 * u[:, 2])
        out[:, D[f"fore_abd_{side}"]] = r * 0.35 * np.sin(2 * np.pi * f2 * t + 6 * u[:, 2])
    return out


def _dance(t, dur, u, s):
    out = np.zeros((len(t), NUM_DOF))
    beat = (1.6 + 0.6 * u[:, 0]) * s[:, 0]
    p = np.pi * beat * t + 2 * np.pi * u[:, 2]
    a = s[:, 1] * (0.8 + 0.4 * u[:, 1])
    out[:, D["bob"]] = 0.04 * a * np.abs(np.sin(p))
    out[:, D["twist"]] = 0.35 * a * np.sin(p)
    out[:, D["side_speed"]] = 0.6 * a * np.sin(p / 2)
    out[:, D["lean"]] = s[:, 3] + 0.05 * np.sin(2 * p)
    for side, phase in (("l", 0.0), ("r", np.pi)):
        out[:, D[f"sh_abd_{side}"]] = 1.2 * a + 0.8 * a * np.sin(2 * p + phase + 6 * u[:, 3])
        out[:, D[f"sh_flex_{side}"]] = 0.8 + 0.6 * a * np.sin(p + phase)
        out[:, D[f"elbow_{side}"]] = 0.8 + 0.5 * np.sin(2 * p + phase)
        out[:, D[f"hip_flex_{side}"]] = 0.3 * a * np.maximum(0, np.sin(p + phase))
        out[:, D[f"knee_{side}"]] = 0.6 * a * np.maximum(0, np.sin(p + phase)) + 0.05
    return out


def _bend(t, dur, u, s):
    out = _rest(t, u, s, sway=0.3)
    x = np.sin(np.pi * np.clip(t / dur, 0, 1))
    out[:, D["lean"]] += (0.9 + 0.4 * u[:, 0]) * x
    out[:, D["knee_l"]] += 0.5 * u[:, 1] * x
    out[:, D["knee_r"]] += 0.5 * u[:, 1] * x
    out[:, D["sh_flex_l"]] += 0.8 * x
    out[:, D["sh_flex_r"]] += 0.8 * x
    return out


def _stretch(t, dur, u, s):
    out = _rest(t, u, s, sway=0.3)
    x = np.sin(np.pi * np.clip(t / dur, 0, 1))
    for side in ("l", "r"):
        out[:, D[f"sh_flex_{side}"]] += (2.2 + 0.6 * u[:, 0]) * x
        out[:, D[f"sh_abd_{side}"]] += 0.3 * u[:, 1] * x
    out[:, D["lean"]] -= 0.1 * x
    return out


def _look(t, dur, u, s):
    out = _rest(t, u, s, sway=0.7)
    out[:, D["twist"]] = (0.3 + 0.4 * u[:, 0]) * np.sin(2 * np.pi * (0.3 + 0.3 * u[:, 1]) * t)
    out[:, D["nod"]] += 0.2 * np.sin(2 * np.pi * 0.4 * t + 6 * u[:, 2])
    return out


def _scratch(t, dur, u, s):
    out = _rest(t, u, s, sway=0.5)
    x = _smoothstep(t / 0.5) * _smoothstep((dur - t) / 0.5)
    out[:, D["sh_flex_l"]] += x * (1.7 + 0.3 * u[:, 0])
    out[:, D["sh_abd_l"]] += x * 0.5
    out[:, D["elbow_l"]] += x * (2.0 + 0.2 * np.sin(2 * np.pi * 3 * t))
    return out


def _clap(t, dur, u, s):
    out = _rest(t, u, s, sway=0.4)
    x = _smoothstep(t / 0.4) * _smoothstep((dur - t) / 0.4)
    clap = np.sin(2 * np.pi * (2 + u[:, 0]) * t)
    for side in ("l", "r"):
        out[:, D[f"sh_flex_{side}"]] += x * 1.1
        out[:, D[f"elbow_{side}"]] += x * 0.6
        out[:, D[f"fore_abd_{side}"]] = x * (-0.5 + 0.25 * clap)
    return out


_CURVES = {
    "walk": _walk, "stand": _stand, "turn": _turn, "jump": _jump, "sit": _sit, "run": _run,
    "stand_up": _stand_up, "kick": _kick, "jog": _jog, "wave": _wave, "dance": _dance, "gesture": _gesture,
    "bend": _bend, "stretch": _stretch, "look": _look, "scratch": _scratch, "clap": _clap,
}  # fmt: skip
_ONE_SIDED = {"kick", "wave", "gesture", "scratch"}  # drawn for the left side, mirrored half of the time


def _motion_dofs(motion, t, dur, u, style):
    """DOFs (n, NUM_DOF) for frames with motion ids `motion` (n,), evaluated per motion kind."""
    out = np.zeros((len(t), NUM_DOF))
    for m in np.unique(motion):
        name = MOTIONS[m]
        rows = np.flatnonzero(motion == m)
        dofs = _CURVES[name](t[rows], dur[rows], u[rows], style[rows])
        if name in _ONE_SIDED:
            mirror = u[rows, 5] < 0.5
            swapped = dofs.copy()
            swapped[:, _LEFT], swapped[:, _RIGHT] = dofs[:, _RIGHT], dofs[:, _LEFT]
            dofs = np.where(mirror[:, None], swapped, dofs)
        out[rows] = dofs
    return out


# ---------------------------------------------------------------------------------------------------
# Plans: which motion runs when.
# ---------------------------------------------------------------------------------------------------


def _plan(rng, length, cfg: SynthConfig, motions=None):
    """Runs [(motion id, length)] and transition lengths between them, covering at least `length` frames.

    motions=None draws from the action vocabulary with background motions between; otherwise only from
    the given motion names (the distractor body).
    """
    runs, transitions, total = [], [], 0
    while total < length:
        if runs:
            tr = int(rng.integers(cfg.transition_length[0], cfg.transition_length[1] + 1))
            transitions.append(tr)
            total += tr
        if motions is not None:
            m = MOTIONS.index(motions[rng.integers(len(motions))])
            n = int(rng.integers(cfg.action_length[0], cfg.action_length[1] + 1))
        elif rng.random() < cfg.other_prob and (not runs or runs[-1][0] < BACKGROUND):
            m = BACKGROUND + int(rng.integers(len(OTHER_MOTIONS)))
            n = int(rng.integers(cfg.other_length[0], cfg.other_length[1] + 1))
        else:
            m = int(rng.integers(len(ACTIONS)))
            n = int(rng.integers(cfg.action_length[0], cfg.action_length[1] + 1))
        runs.append((m, n))
        total += n
    return runs, transitions


def _frame_tracks(runs, transitions, length):
    """Per-frame motion tracks for one body: (motion_a, t_a, dur_a, run_a, motion_b, t_b, dur_b, run_b,
    weight_b, label), arrays of `length`; runs are numbered 0.. within the body."""
    ma, ta, da, ra = (
        np.zeros(length, np.int64),
        np.zeros(length),
        np.ones(length),
        np.zeros(length, np.int64),
    )
    mb, tb, db, rb = (
        np.zeros(length, np.int64),
        np.zeros(length),
        np.ones(length),
        np.zeros(length, np.int64),
    )
    w = np.zeros(length)
    label = np.full(length, BACKGROUND, np.int64)
    pos = 0
    for i, (m, n) in enumerate(runs):
        stop = min(pos + n, length)
        if stop > pos:
            sl = slice(pos, stop)
            ma[sl], ta[sl], da[sl], ra[sl] = m, np.arange(stop - pos) / FPS, n / FPS, i
            if m < BACKGROUND:
                label[sl] = m
        pos += n
        if i < len(transitions) and pos < length:
            tr = transitions[i]
            stop = min(pos + tr, length)
            k = np.arange(stop - pos)
            sl = slice(pos, stop)
            ma[sl], ta[sl], da[sl], ra[sl] = m, (n + k) / FPS, n / FPS, i
            m2, n2 = runs[i + 1]
            mb[sl], tb[sl], db[sl], rb[sl] = m2, (k - tr) / FPS, n2 / FPS, i + 1
            w[sl] = _smoothstep((k + 0.5) / tr)
            pos += tr
    return ma, ta, da, ra, mb, tb, db, rb, w, label


# ---------------------------------------------------------------------------------------------------
# Forward kinematics.
# ---------------------------------------------------------------------------------------------------


def _limb(flex, abd, side, F, L, U):
    """Unit direction of a limb segment: hanging down, swung forward by `flex`, outward by `abd`."""
    cf = np.cos(flex)[:, None]
    return -cf * np.cos(abd)[:, None] * U + np.sin(flex)[:, None] * F + side * cf * np.sin(abd)[:, None] * L


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def forward_kinematics(dof, heading, position, bones):
    """Joints (n, 25, 3) from DOFs (n, NUM_DOF), heading (n,) radians, ground position (n, 3) of the
    pelvis (y ignored) and bone lengths (n, 25) per child joint. Feet are placed on the ground (y = 0 at
    the lowest ankle minus ANKLE_HEIGHT) and lifted by the `bob` DOF."""
    dof, heading, position, bones = (np.asarray(a, np.float32) for a in (dof, heading, position, bones))
    n = len(dof)
    J = np.zeros((n, NUM_JOINTS, 3), np.float32)
    b = lambda j: bones[:, j : j + 1]  # noqa: E731
    c = lambda name: dof[:, D[name]]  # noqa: E731
    U = np.broadcast_to(np.array([0.0, 1.0, 0.0], np.float32), (n, 3))
    F = np.stack([np.sin(heading), np.zeros(n, np.float32), np.cos(heading)], 1)
    L = np.cross(U, F)
    # upper body: twist about the vertical, then lean forward
    tw, ln = c("twist")[:, None], c("lean")[:, None]
    F1 = np.cos(tw) * F + np.sin(tw) * L
    L1 = np.cross(U, F1)
    Uu = np.cos(ln) * U + np.sin(ln) * F1
    Fu = np.cos(ln) * F1 - np.sin(ln) * U
    Lu = L1

    J[:, 0] = 0.0
    J[:, 1] = J[:, 0] + b(1) * Uu
    J[:, 20] = J[:, 1] + b(20) * Uu
    nod = c("nod")[:, None]
    head_dir = np.cos(nod) * Uu + np.sin(nod) * Fu
    J[:, 2] = J[:, 20] + b(2) * head_dir
    J[:, 3] = J[:, 2] + b(3) * head_dir
    beta = 0.15
    for side, sh, el, wr, ha, tip, th, s in (
        ("l", 4, 5, 6, 7, 21, 22, 1.0),
        ("r", 8, 9, 10, 11, 23, 24, -1.0),
    ):
        J[:, sh] = J[:, 20] + b(sh) * (s * np.cos(beta) * Lu - np.sin(beta) * Uu)
        upper = _limb(c(f"sh_flex_{side}"), c(f"sh_abd_{side}"), s, Fu, Lu, Uu)
        fore = _limb(
            c(f"sh_flex_{side}") + c(f"elbow_{side}"),
            c(f"sh_abd_{side}") + c(f"fore_abd_{side}"),
            s,
            Fu,
            Lu,
            Uu,
        )
        J[:, el] = J[:, sh] + b(el) * upper
        J[:, wr] = J[:, el] + b(wr) * fore
        J[:, ha] = J[:, wr] + b(ha) * fore
        J[:, tip] = J[:, ha] + b(tip) * fore
        J[:, th] = J[:, ha] + b(th) * _unit(fore + 0.8 * Fu + s * 0.3 * Lu)
    for side, hip, kn, an, ft, s in (("l", 12, 13, 14, 15, 1.0), ("r", 16, 17, 18, 19, -1.0)):
        J[:, hip] = J[:, 0] + b(hip) * (s * np.cos(0.5) * L - np.sin(0.5) * U)
        flex, abd = c(f"hip_flex_{side}"), c(f"hip_abd_{side}")
        J[:, kn] = J[:, hip] + b(kn) * _limb(flex, abd, s, F, L, U)
        J[:, an] = J[:, kn] + b(an) * _limb(flex - c(f"knee_{side}"), abd, s, F, L, U)
        J[:, ft] = J[:, an] + b(ft) * (np.cos(0.25) * F - np.sin(0.25) * U)
    lift = ANKLE_HEIGHT - np.minimum(J[:, 14, 1], J[:, 18, 1]) + c("bob")
    J[:, :, 1] += lift[:, None]
    J[:, :, 0] += position[:, None, 0]
    J[:, :, 2] += position[:, None, 2]
    return J


def _segment_cumsum(values, starts):
    """Cumulative sum restarting at each index in `starts` (sorted, starts[0] == 0)."""
    total = np.cumsum(values, axis=0)
    before = np.concatenate([np.zeros_like(total[:1]), total[:-1]])
    offset = np.repeat(before[starts], np.diff(np.append(starts, len(values))), axis=0)
    return total - offset


def _rotation(yaw, pitch, roll):
    cy, sy, cp, sp, cr, sr = (
        np.cos(yaw),
        np.sin(yaw),
        np.cos(pitch),
        np.sin(pitch),
        np.cos(roll),
        np.sin(roll),
    )
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    Rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return Rz @ Rx @ Ry


# ---------------------------------------------------------------------------------------------------
# Generation.
# ---------------------------------------------------------------------------------------------------


def _sequence_rng(seed, i):
    return np.random.default_rng(np.random.SeedSequence([seed, 1, i]))


def _generate_chunk(indices, seed, cfg: SynthConfig, subjects, noise: bool = True):
    """Generate the sequences with global numbers `indices` (vectorized over all their frames)."""
    bodies_tracks, infos = [], []
    for i in indices:
        rng = _sequence_rng(seed, i)
        length = int(rng.integers(cfg.length[0], cfg.length[1] + 1))
        subject = int(rng.integers(len(subjects)))
        runs, trans = _plan(rng, length, cfg)
        body_plans = [(subject, runs, trans)]
        if rng.random() < cfg.two_body_prob:
            other = (
                int((subject + 1 + rng.integers(len(subjects) - 1)) % len(subjects))
                if len(subjects) > 1
                else 0
            )
            body_plans.append((other, *_plan(rng, length, cfg, motions=DISTRACTOR_MOTIONS)))
        info = {
            "index": i, "length": length, "subject": subject, "runs": runs, "transitions": trans,
            "bodies": len(body_plans), "rng": rng,
        }  # fmt: skip
        for body, (subj, r, tr) in enumerate(body_plans):
            tracks = _frame_tracks(r, tr, length)
            if body == 0:
                info["labels"] = tracks[-1]
            run_u = rng.random((len(r), 6))
            bodies_tracks.append((len(infos), body, subj, tracks, run_u))
        infos.append(info)

    # Flatten all bodies' frames of the chunk into one table.
    cols = {k: [] for k in ("seq", "body", "subj", "ma", "ta", "da", "mb", "tb", "db", "w", "ua", "ub")}
    starts, heading0, pos0 = [], [], []
    nrows = 0
    for seq, body, subj, tracks, run_u in bodies_tracks:
        ma, ta, da, ra, mb, tb, db, rb, w, _ = tracks
        n = len(ma)
        starts.append(nrows)
        nrows += n
        for k, v in (("seq", seq), ("body", body), ("subj", subj)):
            cols[k].append(np.full(n, v, np.int64))
        for k, v in (("ma", ma), ("ta", ta), ("da", da), ("mb", mb), ("tb", tb), ("db", db), ("w", w)):
            cols[k].append(v)
        cols["ua"].append(run_u[ra])
        cols["ub"].append(run_u[rb])
        rng = infos[seq]["rng"]
        heading0.append(rng.uniform(0, 2 * np.pi))
        pos0.append([rng.uniform(-1.0, 1.0) + (1.3 if body else 0.0), 0.0, rng.uniform(-1.0, 1.0)])
    tab = {k: np.concatenate(v) for k, v in cols.items()}
    starts = np.asarray(starts)
    body_start = np.cumsum([0] + [info["bodies"] for info in infos])  # first track of each sequence
    style_table = np.array([[s.speed, s.amplitude, s.arm_style, s.lean] for s in subjects])
    bones_table = np.stack([s.bones for s in subjects])
    style = style_table[tab["subj"]]

    dof_a = _motion_dofs(tab["ma"], tab["ta"], tab["da"], tab["ua"], style)
    dof_b = _motion_dofs(tab["mb"], tab["tb"], tab["db"], tab["ub"], style)
    w = tab["w"][:, None]
    dof = (1 - w) * dof_a + w * dof_b

    counts = np.diff(np.append(starts, nrows))
    heading = np.repeat(np.asarray(heading0), counts) + _segment_cumsum(dof[:, D["yaw_rate"]], starts)
    fwd = np.stack([np.sin(heading), np.zeros(nrows), np.cos(heading)], 1)
    left = np.stack([np.cos(heading), np.zeros(nrows), -np.sin(heading)], 1)
    velocity = (dof[:, D["speed"], None] * fwd + dof[:, D["side_speed"], None] * left) / FPS
    position = np.repeat(np.asarray(pos0), counts, axis=0) + _segment_cumsum(velocity, starts)
    joints = forward_kinematics(dof, heading, position, bones_table[tab["subj"]])

    out = []
    for k, info in enumerate(infos):
        rng = info["rng"]
        length, nb = info["length"], info["bodies"]
        seq_joints = np.zeros((length, nb, NUM_JOINTS, 3), np.float32)
        for body in range(nb):
            row = starts[body_start[k] + body]
            seq_joints[:, body] = joints[row : row + length]
        # camera: keep the subject roughly centred 2.5-4 m in front of the sensor
        centre = seq_joints[:, 0, 0].mean(axis=0)
        R = _rotation(rng.uniform(-0.4, 0.4), rng.uniform(-0.25, 0.25), rng.uniform(-0.05, 0.05))
        offset = np.array([rng.uniform(-0.4, 0.4), rng.uniform(-1.0, -0.7), rng.uniform(2.5, 4.0)])
        seq_joints = (seq_joints - centre * np.array([1, 0, 1], np.float32)) @ R.T.astype(
            np.float32
        ) + offset.astype(np.float32)
        sigma = float(rng.uniform(*cfg.noise_sigma)) if noise else 0.0
        if sigma > 0:
            seq_joints = seq_joints + sigma * rng.standard_normal(seq_joints.shape, dtype=np.float32)
        dropped = np.zeros(length, bool)
        if noise and rng.random() < cfg.drop_prob:
            for _ in range(int(rng.integers(1, 4))):
                start = int(rng.integers(0, length))
                dropped[start : start + int(rng.integers(1, 7))] = True
        seq_joints[dropped] = 0.0
        labels = info["labels"]
        out.append(
            SynthSequence(
                name=f"synth{info['index']:06d}",
                joints=seq_joints.astype(np.float32),
                labels=labels,
                segments=segments_of(labels),
                subject=info["subject"],
                noise_sigma=sigma,
                dropped=dropped,
            )
        )
    return out


def segments_of(labels, background: int = BACKGROUND):
    """Runs of equal non-background labels as (class, start, end) with end exclusive."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        return []
    change = np.flatnonzero(np.diff(labels)) + 1
    bounds = np.concatenate([[0], change, [len(labels)]])
    return [
        (int(labels[a]), int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if labels[a] != background
    ]


def generate(
    num_sequences: int,
    seed: int = 0,
    *,
    config: SynthConfig | None = None,
    start: int = 0,
    chunk: int = 256,
    noise: bool = True,
):
    """Yield SynthSequence objects number start .. start + num_sequences - 1 of this seed's dataset.

    Sequence i is the same whatever `start`, `num_sequences` or `chunk` are. noise=False turns off sensor
    noise and dropped frames (for tests of the clean kinematics)."""
    cfg = config or SynthConfig()
    if num_sequences < 0:
        raise SkelclError(f"number of sequences must be >= 0, got {num_sequences}")
    if cfg.num_subjects < 1:
        raise SkelclError(f"num_subjects must be >= 1, got {cfg.num_subjects}")
    if not 1 <= cfg.length[0] <= cfg.length[1]:
        raise SkelclError(f"length range must satisfy 1 <= min <= max, got {cfg.length}")
    subjects = make_subjects(cfg.num_subjects, seed)
    for lo in range(start, start + num_sequences, chunk):
        hi = min(lo + chunk, start + num_sequences)
        yield from _generate_chunk(range(lo, hi), seed, cfg, subjects, noise=noise)


def generate_cache(
    out,
    num_sequences: int,
    seed: int = 0,
    *,
    config: SynthConfig | None = None,
    dtype: str = "float32",
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write `num_sequences` synthetic sequences into a cache at `out` (split scheme "xsub": train/test by
    subject; attributes subject and bodies)."""
    from tqdm import tqdm

    cfg = config or SynthConfig()
    source = {"generator": "skelcl.data.synthetic", "seed": seed, "sequences": num_sequences,
              "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}}  # fmt: skip
    with CacheWriter(out, CLASSES, dtype=dtype, max_bodies=2, splits={"xsub": ["train", "test"]},
                     attrs=["subject"], source=source, overwrite=overwrite) as writer:  # fmt: skip
        bar = tqdm(total=num_sequences, desc="synth", unit="seq", disable=not progress)
        for seq in generate(num_sequences, seed, config=cfg):
            part = "test" if seq.subject % cfg.test_every == cfg.test_every - 1 else "train"
            writer.add(seq.name, seq.joints, seq.labels, split={"xsub": part}, attrs={"subject": seq.subject})
            bar.update(1)
        bar.close()
    return Path(out)


def bone_length_table(subject: Subject) -> np.ndarray:
    """The subject's bone lengths for the kinematic tree's non-root joints, in skeleton.bone_lengths order."""
    return subject.bones[np.flatnonzero(PARENT >= 0)]
