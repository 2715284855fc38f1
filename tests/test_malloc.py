"""keep_freed_memory: with it, a freed 64 MiB tensor's pages stay mapped and the next one of the same size
takes no page faults; without it (SKELCL_MALLOC=default) glibc maps fresh pages each time. Each setting
runs in its own process (the setting holds for a whole process)."""

import json
import os
import subprocess
import sys

import pytest

from skelcl.train import malloc

PROBE = """
import json, resource, torch
from skelcl.train.malloc import keep_freed_memory
tuned = keep_freed_memory()
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.empty(16 << 20)  # 64 MiB of float32
    t.fill_(1.0)
    del t
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"tuned": tuned, "faults": [faults(), faults()]}))
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
    assert default["faults"][1] > pages // 2  # glibc default: fresh pages for the second tensor too
    assert tuned["faults"][1] < pages // 16  # tuned: the freed pages are reused


def test_opt_out_and_idempotent(monkeypatch):
    monkeypatch.setattr(malloc, "_done", None)
    monkeypatch.setenv("SKELCL_MALLOC", "default")
    assert malloc.keep_freed_memory() is False
    monkeypatch.setenv("SKELCL_MALLOC", "tuned")
    assert malloc.keep_freed_memory() is False  # decided once per process
