"""What a supervising process (the studio's worker) needs from an engine run it started as a child.

``result.json`` says how the run ended; ``die_with_parent`` makes a run end with its supervisor, even
when that is killed with SIGKILL, so nothing outlives a killed worker.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import signal
import sys
from pathlib import Path

RESULT_FILE = "result.json"


def result_write(result) -> None:
    """``<output_dir>/result.json``: how the run ended, for a supervisor that started it as a process."""
    data = {
        "status": result.status,
        "step": result.step,
        "last_checkpoint": str(result.last_checkpoint) if result.last_checkpoint else None,
        "final_model": str(result.final_model) if result.final_model else None,
        "eval_metrics": {k: v for k, v in result.eval_metrics.items() if math.isfinite(v)},
        "dropped": result.dropped,
        "reference_was_cached": result.reference_was_cached,
    }
    path = Path(result.output_dir) / RESULT_FILE
    path.with_suffix(".tmp").write_text(json.dumps(data))
    path.with_suffix(".tmp").replace(path)


PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent ends (elsewhere: nothing)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == 1:  # the parent ended before the request: this process is already an orphan
            raise SystemExit("the supervising process ended before training started")
