"""Metric logging overhead and metric reads, on a throwaway database.

``python bench/metric_logging.py [--steps 800] [--points 100000] [--postgres]``

1. Overhead: a tiny Llama (hidden 64, 2 layers, batch 8) trains ``--steps`` steps at its natural rate,
   once with no callback and once through the worker's own path: ``DbMetrics`` (batched inserts, with
   each step padded to 20 metrics) and the per-step cancel/lease check (one primary-key query).  The time
   spent inside the logging code and the cancel check is measured directly and reported as a share of
   the training time; the A/B wall-time ratio is printed too (noisier on a shared machine).  Target < 2%.
2. Reads: a job with ``--points`` points (20 metrics × N steps); ``metrics_after`` fetches the next 1,000
   points after a random cursor, 200 times; median and p95.  Target < 20 ms.

The database is a SQLite file in a temporary folder, or with ``--postgres`` a new database on the local
server the tests use (dropped afterwards).
"""

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def setup_django(var: Path, postgres: bool) -> None:
    os.environ["PREFSTUDIO_VAR"] = str(var)
    os.environ["ARTIFACT_ROOT"] = str(var / "artifacts")
    os.environ.pop("DATABASE_URL", None)
    if postgres:
        os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/bench_metrics_{os.getpid()}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prefstudio.settings")
    import django

    django.setup()
    from django.db import connection

    if postgres:
        _create_postgres(connection.settings_dict["NAME"])
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _create_postgres(name: str) -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')


def _drop_postgres(name: str) -> None:
    import psycopg
    from django.db import connections

    connections.close_all()
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def make_job(var: Path):
    """A queued job row on a one-row dataset version (metric points need a job to belong to)."""
    from annotation.models import DatasetExample, DatasetVersion, Project
    from jobs.models import JobState
    from training.models import Location, ModelEntry, TrainingJob

    project = Project.objects.create(name=f"bench {time.time()}")
    version = DatasetVersion.objects.create(
        project=project, number=1, rule={}, seed=0, test_fraction=0.0, content_hash="0" * 64
    )
    DatasetExample.objects.create(
        version=version, index=0, split="train", row={"prompt": "p", "chosen": "a", "rejected": "b"}
    )
    base = ModelEntry.objects.get_or_create(
        name="bench-tiny", defaults={"location": Location.HUB, "path": "x"}
    )[0]
    return TrainingJob.objects.create(
        method="dpo", config={}, base_model=base, dataset_version=version, state=JobState.RUNNING, attempts=1
    )


def train_config(var: Path, steps: int, name: str):
    from tests.training_support import synthetic_rows
    from training.engine import config_from_dict

    data = var / "train.jsonl"
    if not data.exists():
        import json

        data.write_text("".join(json.dumps(r) + "\n" for r in synthetic_rows(64)))
    return config_from_dict(
        {
            "method": "dpo",
            "model": "tiny:hidden=64,layers=2,heads=4",
            "train_file": str(data),
            "output_dir": str(var / name),
            "batch_size": 8,
            "epochs": 1000,
            "max_steps": steps,
            "learning_rate": 1e-4,
            "max_length": 64,
            "ref_cache_dir": str(var / "refcache"),
            "save_steps": None,
            "eval_steps": 10_000,
        }
    )


class Timed:
    """The worker's own callback, cancel check and background flusher, with the time spent in each:
    wall time on the training thread (``log`` + ``should_cancel``) and the CPU time of the background
    thread's flushes (what they can take from training)."""

    def __init__(self, job_id: int):
        from jobs.leases import Lease
        from training.models import TrainingJob
        from training.services.attempt import AttemptWatch
        from training.services.metrics import DbMetrics

        self.db = DbMetrics(job_id)
        self.watch = AttemptWatch(Lease(TrainingJob, job_id, 1), metrics=self.db)
        self.on_thread = self.cancel_spent = self.background = 0.0
        self.flushes = 0
        flush = self.db.flush

        def timed_flush():  # CPU time: its wall time mostly waits for the GIL the training thread holds
            tick = time.thread_time()
            flush()
            self.background += time.thread_time() - tick
            self.flushes += 1

        self.db.flush = timed_flush

    def log(self, metrics, step):
        tick = time.perf_counter()
        padded = dict(metrics)
        for i in range(max(0, 20 - len(padded))):
            padded[f"extra/metric_{i}"] = float(step) * 0.001 * i
        self.db.log(padded, step)
        self.on_thread += time.perf_counter() - tick

    def should_cancel(self):
        tick = time.perf_counter()
        result = self.watch.should_cancel()
        self.cancel_spent += time.perf_counter() - tick
        self.on_thread += time.perf_counter() - tick
        return result


def bench_overhead(var: Path, steps: int) -> float:
    from training.engine.methods import recipe_for
    from training.engine.runtime.loop import prepare, run

    job = make_job(var)
    walls = {"plain": [], "logged": []}
    shares = {"thread": [], "cancel": [], "background": []}
    flushes = []
    for rep in range(2):
        for label in ("plain", "logged"):
            config = train_config(var, steps, f"{label}-{rep}")
            recipe = prepare(recipe_for(config), config)
            tick = time.perf_counter()
            if label == "logged":
                timed = Timed(job.pk)
                with timed.watch.running():
                    run(recipe, config, callbacks=[timed], should_cancel=timed.should_cancel)
                wall = time.perf_counter() - tick
                base = wall - timed.on_thread
                shares["thread"].append(timed.on_thread / base)
                shares["cancel"].append(timed.cancel_spent / base)
                shares["background"].append(timed.background / base)
                flushes.append(timed.flushes)
                timed.db.flush()
                job.metric_points.all().delete()
            else:
                run(recipe, config)
                wall = time.perf_counter() - tick
            walls[label].append(wall)
    med = {k: statistics.median(v) for k, v in shares.items()}
    total = med["thread"] + med["background"]
    ratio = min(walls["logged"]) / min(walls["plain"])
    print(
        f"overhead: {steps} steps at {steps / min(walls['plain']):.1f} steps/s, 20 metrics/step: "
        f"{100 * med['thread']:.2f}% on the training thread (cancel check {100 * med['cancel']:.2f}%) + "
        f"{100 * med['background']:.2f}% CPU in the background flusher ({min(flushes)}+ flushes a run) = "
        f"{100 * total:.2f}% (target < 2%); "
        f"A/B wall ratio {ratio:.3f} (noisy on a shared machine)"
    )
    return total


def bench_reads(var: Path, points: int) -> float:
    from training.selectors import metrics_after
    from training.services.metrics import metrics_write_batch

    job = make_job(var)
    names = [f"metric/{i}" for i in range(20)]
    n_steps = points // len(names)
    tick = time.perf_counter()
    for start in range(1, n_steps + 1, 1000):
        batch = [
            (s, n, s * 0.01, 1e9 + s) for s in range(start, min(start + 1000, n_steps + 1)) for n in names
        ]
        metrics_write_batch(job_id=job.pk, points=batch)
    print(f"wrote {n_steps * len(names)} points in {time.perf_counter() - tick:.1f} s")
    _analyze()
    rng = random.Random(0)
    timings = []
    for _ in range(200):
        cursor = rng.randrange(0, n_steps - 100)
        tick = time.perf_counter()
        got, new_cursor, _ = metrics_after(job_id=job.pk, cursor=cursor, limit=1000)
        timings.append(time.perf_counter() - tick)
        assert sum(len(v) for v in got.values()) == 1000 and new_cursor == cursor + 50
    median, p95 = statistics.median(timings), sorted(timings)[int(0.95 * len(timings))]
    print(
        f"reads: next 1,000 of {n_steps * len(names)} points: median {1000 * median:.2f} ms, "
        f"p95 {1000 * p95:.2f} ms (target < 20 ms)"
    )
    return median


def _analyze() -> None:
    """Refresh the planner's statistics, as autovacuum does after a bulk of inserts (PostgreSQL)."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE training_metricpoint")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--postgres", action="store_true", help="use a new database on 127.0.0.1:5432")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as folder:
        var = Path(folder)
        setup_django(var, args.postgres)
        from django.db import connection

        name = connection.settings_dict["NAME"]
        try:
            print(f"database: {connection.vendor}")
            share = bench_overhead(var, args.steps)
            median = bench_reads(var, args.points)
        finally:
            if args.postgres:
                _drop_postgres(name)
    ok = share < 0.02 and median < 0.020
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
