"""Compatibility of Triton's CPU interpreter (TRITON_INTERPRET=1) with numpy >= 2.4.

numpy 2.4 no longer converts a 1-element array of ndim > 0 to a Python int. Triton 3.6's interpreter
implements `tensor.__index__` (used by `range(lo, hi)` over runtime bounds, i.e. every loop in these
kernels) as `int(handle.data)` on such an array, so under numpy >= 2.4 the kernels fail in the
interpreter with "only 0-dimensional arrays can be converted to Python scalars". Later Triton releases
(3.9 was checked) convert `handle.data.squeeze()` instead. `patch_interpreter` installs that same
conversion on top of the interpreter's own tensor patching; it does nothing when TRITON_INTERPRET is
not 1, when numpy is older than 2.4 or when the interpreter has no `_patch_lang_tensor` hook. GPU
launches never go through this code.
"""

from __future__ import annotations

import os


def _numpy_at_least(major, minor):
    import numpy as np

    parts = np.__version__.split(".")
    try:
        return (int(parts[0]), int(parts[1])) >= (major, minor)
    except (ValueError, IndexError):
        return True


def _index(self):
    return int(self.handle.data.reshape(-1)[0]) if self.handle.data.size == 1 else int(self.handle.data)


def patch_interpreter():
    """Make tl.tensor.__index__ numpy-2.4-safe inside Triton's interpreter; returns True if installed."""
    if os.environ.get("TRITON_INTERPRET", "0") not in ("1", "true", "True") or not _numpy_at_least(2, 4):
        return False
    try:
        from triton.runtime import interpreter
    except ImportError:
        return False
    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "_skelcl_index_fix", False):
        return original is not None

    def patch_lang_tensor(tensor, scope, *args, **kwargs):
        original(tensor, scope, *args, **kwargs)
        # Pushed after the interpreter's own entry: the scope's restore (last in, first out) undoes
        # both, leaving the class as it was.
        scope.set_attr(tensor, "__index__", _index)

    patch_lang_tensor._skelcl_index_fix = True
    interpreter._patch_lang_tensor = patch_lang_tensor
    return True
