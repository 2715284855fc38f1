"""skelcl sets a passive OpenMP wait before torch starts libgomp, unless the user chose a policy."""

import os
import subprocess
import sys

import pytest

PROBE = "import os, skelcl, torch; print(os.environ.get('OMP_WAIT_POLICY'))"


@pytest.mark.parametrize(
    "env,want",
    [
        ({}, "PASSIVE"),
        ({"OMP_WAIT_POLICY": "active"}, "active"),  # the user's choice is kept
        ({"SKELCL_OMP_WAIT": "default"}, "None"),  # libgomp's default spin-then-sleep
    ],
)
def test_omp_wait_policy_set_before_torch(env, want):
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "SKELCL_OMP_WAIT")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == want
