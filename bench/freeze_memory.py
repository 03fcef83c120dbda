"""Freeze memory: peak resident memory of ``dataset_version_freeze`` on an N-task pairwise project.

Usage: ``python bench/freeze_memory.py [--tasks 100000]``. It creates a PostgreSQL database of its own on
the local server the tests use (or ``DATABASE_URL``'s server; SQLite in a temporary folder when there is
none), fills it with N items, 2N candidates, N tasks and one imported judgment per task (bulk inserts),
then freezes in a fresh process and prints that process's peak RSS (``ru_maxrss``) over its RSS just
before the freeze, and the version's row count and content hash (equal hashes: equal versions).
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from _django_bench import django_setup, scratch_database  # noqa: E402
from import_throughput import postgres_admin_url  # noqa: E402

TEXT = "the model answer is helpful and honest because it explains each step of the result"


def build(tasks: int) -> None:
    django_setup()
    from django.core.management import call_command

    from annotation.models import Candidate, Item, Judgment, Project, Task
    from annotation.services.import_write import insert_returning_ids

    call_command("migrate", verbosity=0)
    project = Project.objects.create(name="freeze memory")
    text = " ".join([TEXT] * 4)
    for start in range(0, tasks, 20_000):
        n = min(20_000, tasks - start)
        columns = ["project", "prompt", "metadata", "source", "split", "content_hash", "is_gold"]
        rows = [
            (project.pk, f"#{start + i} {text}?", {}, "bench", "", f"h{start + i}", False) for i in range(n)
        ]
        items = insert_returning_ids(Item, columns, rows)
        candidates = insert_returning_ids(
            Candidate,
            ["item", "position", "text", "provenance"],
            [(item, p, f"{p}: {text}", {"kind": "imported"}) for item in items for p in (0, 1)],
        )
        task_ids = insert_returning_ids(
            Task,
            ["project", "item", "candidate_ids"],
            [(project.pk, item, candidates[2 * i : 2 * i + 2]) for i, item in enumerate(items)],
        )
        columns = ["task", "source", "choice", "corrected_step", "rationale"]
        insert_returning_ids(Judgment, columns, [(t, "imported", "a", "", "") for t in task_ids])
    print(f"  built {tasks:,} tasks with one imported judgment each")


def freeze() -> None:
    django_setup()
    from annotation.models import Project
    from annotation.services.versions import FreezeRule, dataset_version_freeze

    project = Project.objects.get(name="freeze memory")
    idle = rss_mb()
    began = time.perf_counter()
    version = dataset_version_freeze(project=project, rule=FreezeRule(), seed=0, test_fraction=0.1)
    seconds = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"  freeze: {version.stats['examples']:,} rows in {seconds:.1f} s; RSS before {idle:.0f} MB,"
        f" peak {peak:.0f} MB (+{peak - idle:.0f} MB); content_hash {version.content_hash[:16]}"
    )


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(database_url: str, var: Path, tasks: int) -> None:
    env = {**os.environ, "DATABASE_URL": database_url, "PREFSTUDIO_VAR": str(var), "DEBUG": "0"}
    env["SECRET_KEY"] = "bench-only-secret-key-" + "x" * 40
    env["PREFSTUDIO_EMBEDDED_ONLY"] = "1"
    for step in ("build", "freeze"):
        command = [sys.executable, __file__, "--child", step, "--tasks", str(tasks)]
        subprocess.run(command, env=env, cwd=ROOT, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--child", choices=["build", "freeze"])
    args = parser.parse_args()
    if args.child:
        return build(args.tasks) if args.child == "build" else freeze()
    admin = postgres_admin_url()
    with tempfile.TemporaryDirectory(prefix="prefstudio-freeze-memory-") as folder:
        if admin is None:
            return run(f"sqlite:///{Path(folder) / 'bench.sqlite3'}", Path(folder), args.tasks)
        with scratch_database(admin, f"prefstudio_bench_freeze_{os.getpid()}") as url:
            run(url, Path(folder), args.tasks)
    return None


if __name__ == "__main__":
    main()
