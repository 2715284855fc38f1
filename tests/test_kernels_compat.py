"""Triton's interpreter under numpy >= 2.4: the index conversion skelcl installs (kernels/_triton_compat.py).

Triton 3.6's interpreter converts a loop bound with int() on a 1-element array, which numpy 2.4 refuses.
Simulated here by putting that conversion back on top of the installed interpreter: a kernel with a
runtime loop bound then fails, and runs after patch_interpreter().
"""

import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import skelcl.kernels._triton_compat as compat  # noqa: E402
import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.runtime import interpreter  # noqa: E402


@triton.jit
def _sum_kernel(x_ptr, out_ptr, n):
    acc = tl.zeros((1,), dtype=tl.float32)
    for i in range(0, n):  # runtime bound: goes through tensor.__index__ in the interpreter
        acc += tl.load(x_ptr + i + tl.arange(0, 1))
    tl.store(out_ptr + tl.arange(0, 1), acc)


@pytest.mark.skipif(not compat._numpy_at_least(2, 4), reason="numpy < 2.4 converts 1-element arrays")
def test_patch_interpreter_fixes_the_index_conversion(monkeypatch):
    real = interpreter._patch_lang_tensor

    def like_triton_36(tensor, scope, *args, **kwargs):
        real(tensor, scope, *args, **kwargs)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data))

    monkeypatch.setattr(interpreter, "_patch_lang_tensor", like_triton_36)
    x = torch.arange(1.0, 6.0)
    out = torch.zeros(1)
    with pytest.raises(Exception, match="0-dimensional"):
        _sum_kernel[(1,)](x, out, 5)
    assert compat.patch_interpreter()
    _sum_kernel[(1,)](x, out, 5)
    assert float(out[0]) == 15.0
    assert not hasattr(triton.language.tensor, "__index__")  # the interpreter's restore undid it all


def test_numpy_version_parse():
    assert compat._numpy_at_least(1, 0)
    assert not compat._numpy_at_least(int(np.__version__.split(".")[0]) + 1, 0)
