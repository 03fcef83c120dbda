"""``python -m training.engine.launch TORCHRUN-ARGS…``: torchrun that ends when its parent process ends.

A supervisor (the studio's worker) starts training through this module rather than ``torchrun`` itself:
it asks Linux to SIGKILL this process when the supervisor dies, even by SIGKILL, then runs
``torch.distributed.run`` in the same process with the given arguments.  The ranks torchrun starts ask the
same of it (``training.engine train --die-with-parent``), so nothing outlives a killed worker.  Setting the
signal here rather than in a ``preexec_fn`` keeps fork-without-exec out of the multi-threaded worker.
"""

from __future__ import annotations

import runpy
import sys

from training.engine.supervision import die_with_parent


def main(argv: list[str]) -> None:
    die_with_parent()
    sys.argv = ["torchrun", *argv]
    runpy.run_module("torch.distributed.run", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
