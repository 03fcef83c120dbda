"""The ``sbatch`` script of a ``slurm`` job: ``srun torchrun …`` on the job's config, reporting to the job.

One task per node (``srun``), each a torchrun of ``processes_per_node`` processes meeting by c10d
rendezvous on the allocation's first node; global rank 0 reports over the API (``external.py``).  The
script always passes ``--resume``: a first run finds no checkpoint and starts from step 0, a run sent
again after a lost one continues from the last checkpoint.  Paths in it are the server's own (the run's
folder, the exported dataset, the caches) on storage the cluster shares.
"""

from __future__ import annotations

import shlex

import yaml

from ..models import TrainingJob
from .runner import dataset_export_ensure

RENDEZVOUS_PORT = 29500


def _one_line(text: str) -> str:
    """User text for a comment line: no line break can end the comment and start a command."""
    return " ".join(str(text).split())[:200]


def sbatch_script(job: TrainingJob, *, studio_url: str) -> str:
    """The script for ``job``; ``studio_url`` is the studio's address as the cluster reaches it."""
    dataset_export_ensure(job.dataset_version)  # the file the config trains on
    config = job.config
    processes, nodes = int(config.get("processes_per_node") or 1), int(config.get("nodes") or 1)
    out = config["output_dir"]
    config_file = f"{out}/slurm.yaml"
    body = yaml.safe_dump(config, sort_keys=False)
    end = "PREFSTUDIO_CONFIG"
    while end in body:
        end += "_END"
    gpus = [] if config.get("device") == "cpu" else [f"#SBATCH --gpus-per-node={processes}"]
    report = f"{studio_url.rstrip('/')}/api/jobs/{job.pk}/report"
    project = job.dataset_version.project
    lines = [
        "#!/bin/bash",
        f"# PrefStudio job {job.pk}: {job.method} from {_one_line(job.base_model.name)} on "
        f"{_one_line(project.name)} v{job.dataset_version.number}.",
        "# Runs the studio's training engine on the allocation and reports to the job page over the API.",
        "# Submit it from a checkout of the studio installed on every node (its virtualenv:",
        "# PREFSTUDIO_PYTHON) with PREFSTUDIO_TOKEN set to an API token of a manager of the project.",
        f"#SBATCH --job-name=prefstudio-{job.pk}",
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=1",
        *gpus,
        f"#SBATCH --output=prefstudio-{job.pk}-%j.out",
        "set -euo pipefail",
        ': "${PREFSTUDIO_TOKEN:?set PREFSTUDIO_TOKEN to an API token of a manager of the project}"',
        'PYTHON="${PREFSTUDIO_PYTHON:-python}"',
        f"CONFIG={shlex.quote(config_file)}",
        f"mkdir -p {shlex.quote(out)}",
        f"cat > \"$CONFIG\" <<'{end}'",
        body.rstrip("\n"),
        end,
        'HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        'srun --kill-on-bad-exit=1 "$PYTHON" -m torch.distributed.run \\',
        f'  --nnodes="$SLURM_NNODES" --nproc-per-node={processes} --max-restarts=0 \\',
        f'  --rdzv-backend=c10d --rdzv-endpoint="$HEAD_NODE:${{PREFSTUDIO_RDZV_PORT:-{RENDEZVOUS_PORT}}}" \\',
        f'  --rdzv-id="prefstudio-{job.pk}-$SLURM_JOB_ID" \\',
        '  -m training.engine train "$CONFIG" --resume --no-progress \\',
        f"  --report-to {shlex.quote(report)}",
    ]
    return "\n".join(lines) + "\n"
