"""`skelcl bench`: throughput of the hot paths, each fast path beside its plain path, in one JSON schema.

record.py    the result schema, the machine fingerprint, versions and git revision; read / write / check
timing.py    CUDA timing (triton's do_bench), peak memory, the card's ceilings and H100-equivalent scale
cases.py     the CPU cases: set-up and one callable per variant (the plain path first)
suite_cpu.py the pytest-benchmark module that times every case (variants interleaved round by round)
runner.py    `skelcl bench`: runs the suites (CPU through pytest-benchmark, GPU through
             scripts/gpu_check.py), progress bar, table, result file
gpu/         the GPU check of the Triton kernels (scripts/gpu_check.py), one module per section
compare.py   `skelcl bench compare BASE NEW`: ratios side by side, exit 1 on a regression
history.py   `skelcl bench history`: committed results over revisions, one PNG per figure
commands.py  the command-line group
"""
