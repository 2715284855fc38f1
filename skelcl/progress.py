"""When to draw progress bars: only when both stdout and stderr are terminals.

tqdm draws on stderr; a redirected output (a log file, a pipe, CI) would get one long line of carriage
returns, so there the commands print plain lines (per epoch, per benchmark case) or nothing (synth,
prepare: their summary comes at the end). Used by RunDir (pretrain, finetune), `skelcl bench`,
`skelcl synth` and `skelcl prepare`.
"""

from __future__ import annotations

import sys


def show_bars() -> bool:
    """True when stdout and stderr are both terminals."""
    return sys.stdout.isatty() and sys.stderr.isatty()
