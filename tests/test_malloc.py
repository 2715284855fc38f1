"""keep_freed_memory: with it, a freed 64 MiB malloc block's pages stay mapped and the next blocks of the
same size take no page faults; without it (SKELCL_MALLOC=default) glibc maps fresh pages each time.
Each setting runs in its own process (the setting holds for a whole process)."""

import json
import os
import subprocess
import sys

import pytest

from skelcl.train import malloc

PROBE = """
import ctypes, json, resource
from skelcl.train.malloc import keep_freed_memory
tuned = keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)  # touch every page
    libc.free(p)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"tuned": tuned, "faults": [faults() for _ in range(4)]}))
"""


def probe(setting):
    env = {**os.environ, "SKELCL_MALLOC": setting}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(malloc._libc() is None, reason="not glibc")
def test_tuned_malloc_reuses_freed_pages():
    pages = (64 << 20) // 4096
    tuned, default = probe("tuned"), probe("default")
    assert tuned["tuned"] is True and default["tuned"] is False
    assert min(default["faults"][1:]) > pages // 2  # glibc default: fresh pages for every block
    assert max(tuned["faults"][1:]) < pages // 16  # tuned: the freed pages are reused


def test_opt_out_and_idempotent(monkeypatch):
    monkeypatch.setattr(malloc, "_done", None)
    monkeypatch.setenv("SKELCL_MALLOC", "default")
    assert malloc.keep_freed_memory() is False
    monkeypatch.setenv("SKELCL_MALLOC", "tuned")
    assert malloc.keep_freed_memory() is False  # decided once per process
