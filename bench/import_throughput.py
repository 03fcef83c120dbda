"""Import throughput: 100,000 seeded TRL rows through ``preferences_import``, on SQLite (and PostgreSQL).

Usage: ``python bench/import_throughput.py [--rows 100000] [--seed 0]``. Each database runs in its own
child process against a throwaway database (a SQLite file in a temporary folder; a new PostgreSQL
database on the server of ``DATABASE_URL`` when that is a postgres URL, or on the local server the
tests use when it answers, dropped afterwards).

Compared in the same process, on the same data and database:
- naive baseline: ``json.loads`` + per-row ``objects.create`` (item, 2 candidates, task, judgment) in
  autocommit, timed on the first 2,000 rows and extrapolated to all rows;
- lower bound: ``json.loads`` of every line (parse only, nothing validated or stored);
- the export of the imported rows (freeze + JSONL export), when ``annotation.services.exports`` exists.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
BASELINE_ROWS = 2000
WORDS = [
    "the",
    "a",
    "model",
    "answer",
    "helpful",
    "honest",
    "short",
    "long",
    "because",
    "therefore",
    "result",
]


def generate(path: Path, rows: int, seed: int) -> None:
    rng = random.Random(seed)

    def sentence(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n))

    with open(path, "w", encoding="utf-8") as fh:
        for i in range(rows):
            row = {
                "prompt": f"#{i} {sentence(12)}?",
                "chosen": sentence(30),
                "rejected": sentence(25),
                "id": i,
            }
            fh.write(json.dumps(row) + "\n")


def postgres_admin_url() -> str | None:
    """DATABASE_URL, or the local PostgreSQL server that tests use when it answers (prefstudio.testenv)."""
    url = os.environ.get("DATABASE_URL", "")
    if not url:
        sys.path.insert(0, str(ROOT))
        from prefstudio.testenv import service_environment

        url = os.environ.get("DATABASE_URL") or service_environment().get("DATABASE_URL", "")
    return url if url.startswith(("postgres://", "postgresql://")) else None


def with_database(url: str, name: str) -> str:
    return urlunparse(urlparse(url)._replace(path=f"/{name}"))


def run_child(label: str, database_url: str, data: Path, rows: int, var: Path) -> None:
    env = {**os.environ, "DATABASE_URL": database_url, "PREFSTUDIO_VAR": str(var), "DEBUG": "1"}
    env["PREFSTUDIO_EMBEDDED_ONLY"] = "1"
    command = [sys.executable, __file__, "--child", label, "--data", str(data), "--rows", str(rows)]
    subprocess.run(command, env=env, cwd=ROOT, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child")
    parser.add_argument("--data", type=Path)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.data, args.rows)
    with tempfile.TemporaryDirectory(prefix="prefstudio-bench-") as folder:
        folder = Path(folder)
        data = folder / "trl.jsonl"
        generate(data, args.rows, args.seed)
        size_mb = data.stat().st_size / 1e6
        print(f"generated {args.rows:,} TRL rows (seed {args.seed}), {size_mb:.1f} MB of JSONL")
        run_child("sqlite", f"sqlite:///{folder / 'bench.sqlite3'}", data, args.rows, folder / "var-sqlite")
        admin = postgres_admin_url()
        if admin is None:
            print("postgres: skipped (no server; set DATABASE_URL=postgres://… to measure it too)")
            return None
        run_postgres(admin, data, args.rows, folder / "var-postgres")
    return None


def run_postgres(admin: str, data: Path, rows: int, var: Path) -> None:
    import psycopg

    name = f"prefstudio_bench_{os.getpid()}"
    server = with_database(admin, "postgres")
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        run_child("postgres", with_database(admin, name), data, rows, var)
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def child(label: str, data: Path, rows: int) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prefstudio.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    parse_s = time_parse(data)
    naive_s = time_naive(data) * rows / BASELINE_ROWS
    project, import_s, validate_s = time_import(data)
    print(
        f"[{label}] import: {rows:,} rows in {import_s:.1f} s = {rows / import_s:,.0f} rows/s"
        f" (validate {validate_s:.1f} s, write {import_s - validate_s:.1f} s)"
    )
    print(
        f"[{label}] naive per-row ORM create ({BASELINE_ROWS:,} rows timed, extrapolated): {naive_s:.1f} s"
        f" -> import is {naive_s / import_s:.1f}x faster"
    )
    print(
        f"[{label}] json.loads of every line (parse only, lower bound): {parse_s:.2f} s"
        f" -> import takes {import_s / parse_s:.1f}x the parse time"
    )
    time_export(label, project, rows)


def time_parse(data: Path) -> float:
    start = time.perf_counter()
    with open(data, encoding="utf-8") as fh:
        for line in fh:
            json.loads(line)
    return time.perf_counter() - start


def time_naive(data: Path) -> float:
    from annotation.models import Candidate, Item, Judgment, Task
    from annotation.services.projects import project_create

    project = project_create(name="naive baseline", task_type="pairwise")
    start = time.perf_counter()
    with open(data, encoding="utf-8") as fh:
        for _, line in zip(range(BASELINE_ROWS), fh, strict=False):
            row = json.loads(line)
            item = Item.objects.create(project=project, prompt=row["prompt"], content_hash=str(row["id"]))
            chosen = Candidate.objects.create(item=item, position=0, text=row["chosen"])
            rejected = Candidate.objects.create(item=item, position=1, text=row["rejected"])
            task = Task.objects.create(project=project, item=item, candidate_ids=[chosen.pk, rejected.pk])
            Judgment.objects.create(task=task, source="imported", choice="a")
    return time.perf_counter() - start


def time_import(data: Path):
    from annotation.services.imports import preferences_import
    from annotation.services.projects import project_create

    project = project_create(name="bench", task_type="pairwise")
    marks = {}

    def write_started(done: int, total: int) -> None:
        marks.setdefault("write", time.perf_counter())

    start = time.perf_counter()
    outcome = preferences_import(project=project, path=data, write_progress=write_started)
    elapsed = time.perf_counter() - start
    if not outcome.ok:
        raise SystemExit(f"import failed: {outcome.issues[:5]}")
    validate_s = marks["write"] - start
    return project, elapsed, validate_s


def time_export(label: str, project, rows: int) -> None:
    try:
        from annotation.services.exports import export_bytes
        from annotation.services.versions import FreezeRule, dataset_version_freeze
    except ImportError as exc:
        print(f"[{label}] export: not available yet ({exc})")
        return
    start = time.perf_counter()
    version = dataset_version_freeze(project=project, rule=FreezeRule())
    frozen = time.perf_counter()
    result, payload = export_bytes(version=version, fmt="jsonl", split="all")
    done = time.perf_counter()
    print(
        f"[{label}] export: freeze {frozen - start:.1f} s + JSONL {done - frozen:.1f} s"
        f" for {result.rows:,} rows ({len(payload) / 1e6:.1f} MB) = {rows / (done - start):,.0f} rows/s"
    )


if __name__ == "__main__":
    main()
