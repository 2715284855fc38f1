"""The NTU RGB+D 25-joint skeleton: joint names, kinematic tree, left/right flip and the ST-GCN graph.

All indices here are 0-based (NTU's documentation counts joints from 1: NTU joint n is index n - 1).
"""

from __future__ import annotations

import numpy as np

NUM_JOINTS = 25

JOINT_NAMES = (
    "spine_base", "spine_mid", "neck", "head",
    "shoulder_left", "elbow_left", "wrist_left", "hand_left",
    "shoulder_right", "elbow_right", "wrist_right", "hand_right",
    "hip_left", "knee_left", "ankle_left", "foot_left",
    "hip_right", "knee_right", "ankle_right", "foot_right",
    "spine_shoulder", "handtip_left", "thumb_left", "handtip_right", "thumb_right",
)  # fmt: skip

# Joint 20 (spine_shoulder) is the graph's centre, as in ST-GCN.
CENTER = 20

# Kinematic tree used by the synthetic generator and by bone features: PARENT[j] is the joint that bone
# j hangs from (-1 for the root, spine_base). Hand tip and thumb both hang from the hand.
PARENT = np.array(
    [-1, 0, 20, 2, 20, 4, 5, 6, 20, 8, 9, 10, 0, 12, 13, 14, 0, 16, 17, 18, 1, 7, 7, 11, 11], dtype=np.int64
)

# Undirected edges of the NTU-25 graph (the 24 pairs ST-GCN uses, 0-based).
EDGES = (
    (0, 1), (1, 20), (2, 20), (3, 2), (4, 20), (5, 4), (6, 5), (7, 6), (8, 20), (9, 8), (10, 9), (11, 10),
    (12, 0), (13, 12), (14, 13), (15, 14), (16, 0), (17, 16), (18, 17), (19, 18), (21, 22), (22, 7),
    (23, 24), (24, 11),
)  # fmt: skip

# Left/right mirror: FLIP_PERM[j] is the joint that takes j's place after mirroring the body.
_PAIRS = ((4, 8), (5, 9), (6, 10), (7, 11), (12, 16), (13, 17), (14, 18), (15, 19), (21, 23), (22, 24))
FLIP_PERM = np.arange(NUM_JOINTS)
for _a, _b in _PAIRS:
    FLIP_PERM[_a], FLIP_PERM[_b] = _b, _a
FLIP_PERM.setflags(write=False)

# Body parts for part masking.
BODY_PARTS = {
    "torso": (0, 1, 2, 3, 20),
    "left_arm": (4, 5, 6, 7, 21, 22),
    "right_arm": (8, 9, 10, 11, 23, 24),
    "left_leg": (12, 13, 14, 15),
    "right_leg": (16, 17, 18, 19),
}


def hop_distance(num_nodes: int = NUM_JOINTS, edges=EDGES, max_hop: int = 64) -> np.ndarray:
    """Shortest-path hop count between every pair of nodes (np.inf where unreachable), (V, V)."""
    adj = np.zeros((num_nodes, num_nodes), dtype=bool)
    for i, j in edges:
        adj[i, j] = adj[j, i] = True
    dist = np.full((num_nodes, num_nodes), np.inf)
    np.fill_diagonal(dist, 0)
    reach = np.eye(num_nodes, dtype=bool)
    for hop in range(1, max_hop + 1):
        reach_next = reach | (reach.astype(np.int64) @ adj.astype(np.int64) > 0)
        dist[reach_next & ~reach] = hop
        if (reach_next == reach).all():
            break
        reach = reach_next
    return dist


def spatial_adjacency(num_nodes: int = NUM_JOINTS, edges=EDGES, center: int = CENTER) -> np.ndarray:
    """ST-GCN's 3-partition ("spatial") adjacency, float32 (3, V, V), used as y[w] = sum_v x[v] A[k, v, w].

    For each receiving joint w, its neighbourhood (w itself and the joints one hop away) is split by the
    hop distance d(.) to the centre joint:
      A[0]: neighbours v with d(v) == d(w) (w itself included),
      A[1]: neighbours v with d(v) <  d(w) (centripetal: closer to the centre),
      A[2]: neighbours v with d(v) >  d(w) (centrifugal: farther from the centre).
    Every column w is divided by the degree of w in the 1-hop graph with self loop, so the three partitions
    together average over the neighbourhood: A.sum(axis=(0, 1)) == 1 for every w.
    """
    dist = hop_distance(num_nodes, edges)
    near = dist <= 1
    degree = near.sum(axis=0).astype(np.float64)
    norm = near / degree[None, :]
    to_center = dist[:, center]
    A = np.zeros((3, num_nodes, num_nodes), dtype=np.float64)
    for v in range(num_nodes):
        for w in range(num_nodes):
            if not near[v, w]:
                continue
            if to_center[v] == to_center[w]:
                A[0, v, w] = norm[v, w]
            elif to_center[v] < to_center[w]:
                A[1, v, w] = norm[v, w]
            else:
                A[2, v, w] = norm[v, w]
    return A.astype(np.float32)


def bone_lengths(joints: np.ndarray, parent: np.ndarray = PARENT) -> np.ndarray:
    """Length of every bone, (..., V-1) from joints (..., V, 3); the root (parent -1) is left out."""
    child = np.flatnonzero(parent >= 0)
    return np.linalg.norm(joints[..., child, :] - joints[..., parent[child], :], axis=-1)
