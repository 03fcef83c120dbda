"""Annotation queue under load: gunicorn + PostgreSQL, concurrent annotators, 2,000 and 100,000 tasks.

Usage: ``python bench/annotation_load.py [--sessions 16] [--workers 3] [--seconds 15]``. It creates a
PostgreSQL database of its own on the local server the tests use (127.0.0.1:5432, or ``DATABASE_URL``'s
server), drops it afterwards, and starts gunicorn with the repository's ``prefstudio/gunicorn_conf.py``
on a free port (DEBUG off, collected static files).

Per project size: ``--sessions`` logged-in annotators (client processes, each with its own session
and CSRF token) do what the annotate screen does: fetch the task panel (``annotate/next/``, htmx),
then submit a judgment, whose response is the next panel. The same number of clients hit ``/healthz``
on the same server first: the ceiling. Printed: requests/s and its ratio to the ceiling, p50/p95
latency, and a database check (every submit the clients saw succeed is one judgment, no annotator
judged a task twice, the progress counters equal a recount). Targets: ratio ≥ 0.5 at both sizes, the
100,000-task ratio within 20% of the 2,000-task one.
"""

import argparse
import http.client
import multiprocessing
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from _django_bench import django_setup, scratch_database  # noqa: E402
from import_throughput import postgres_admin_url  # noqa: E402

SIZES = (2_000, 100_000)
PASSWORD = "bench-annotator-password"  # noqa: S105
ASSIGNMENT = re.compile(r'data-assignment-id="(\d+)"')
CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
ACTION = re.compile(r'id="judgment-form"[^>]*action="([^"]+)"')


# --- the Django side (a child process with DATABASE_URL set) -------------------------------------------


def build(sessions: int) -> None:
    """Migrate, collect static files, create the annotators and one project per size (bulk inserts)."""
    django_setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from annotation.models import Candidate, Item, Membership, Project, Task
    from annotation.services.import_write import insert_returning_ids
    from annotation.services.progress import progress_tasks_added

    call_command("migrate", verbosity=0)
    call_command("collectstatic", "--noinput", verbosity=0)
    users = [get_user_model()(username=f"bench{i}") for i in range(sessions)]
    for user in users:
        user.set_password(PASSWORD)
    users = get_user_model().objects.bulk_create(users)
    for size in SIZES:
        project = Project.objects.create(name=f"load {size}", guidelines="Prefer the **helpful** answer.")
        Membership.objects.bulk_create(Membership(project=project, user=u, role="annotator") for u in users)
        for start in range(0, size, 20_000):
            n = min(20_000, size - start)
            items = insert_returning_ids(
                Item,
                ["project", "prompt", "metadata", "source", "split", "content_hash", "is_gold"],
                [
                    (
                        project.pk,
                        f"Question {start + i}: what is 2 + 2?",
                        {},
                        "bench",
                        "",
                        f"h{start + i}",
                        False,
                    )
                    for i in range(n)
                ],
            )
            texts = ["It is **4**.", "Probably 5, but I am not sure."]
            candidates = insert_returning_ids(
                Candidate,
                ["item", "position", "text", "provenance"],
                [(item, p, texts[p], {"kind": "imported"}) for item in items for p in (0, 1)],
            )
            insert_returning_ids(
                Task,
                ["project", "item", "candidate_ids"],
                [(project.pk, item, candidates[2 * i : 2 * i + 2]) for i, item in enumerate(items)],
            )
        progress_tasks_added(project_id=project.pk, count=size)
        print(f"  built project {project.pk}: {size:,} tasks")
    with connection.cursor() as cursor:  # as autovacuum would soon: the planner needs the new sizes
        cursor.execute("ANALYZE")


def check(expected: str) -> None:
    """Lost or duplicated judgments, and counters against a recount (``expected``: size=submits,…)."""
    django_setup()
    from collections import Counter

    from annotation.models import Assignment, Judgment, Project, ProjectProgress
    from annotation.selectors import project_counts

    for pair in expected.split(","):
        size, submits = (int(x) for x in pair.split("="))
        project = Project.objects.get(name=f"load {size}")
        judgments = Judgment.objects.filter(task__project=project)
        dup = sum(n - 1 for n in Counter(judgments.values_list("task_id", "annotator_id")).values() if n > 1)
        done = Assignment.objects.filter(task__project=project, state="done").count()
        counters = ProjectProgress.objects.filter(project=project).values(*project_counts(project_id=0))
        exact = counters.first() == project_counts(project_id=project.pk)
        print(
            f"  [{size:,} tasks] DB check: {judgments.count()} judgments for {submits} submits answered 200"
            f" (lost {max(0, submits - judgments.count())}, extra {max(0, judgments.count() - submits)}),"
            f" {dup} duplicated (task, annotator), {done} done assignments,"
            f" counters {'equal' if exact else 'DIFFER from'} a recount"
        )


# --- the client side ---------------------------------------------------------------------------------


class Session:
    """One browser: a cookie jar over fresh connections (gunicorn's sync workers close each one)."""

    def __init__(self, port: int):
        self.port, self.cookies = port, {}

    def request(self, method: str, path: str, body: dict | None = None, headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = dict(headers or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        data = None
        if body is not None:
            data = urlencode(body)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        text = response.read().decode()
        for raw in response.headers.get_all("Set-Cookie") or []:
            for key, morsel in SimpleCookie(raw).items():
                self.cookies[key] = morsel.value
        conn.close()
        return response.status, text, response.headers

    def login(self, username: str) -> None:
        _, page, _ = self.request("GET", "/accounts/login/")
        token = CSRF.search(page).group(1)
        status, _, _ = self.request(
            "POST",
            "/accounts/login/",
            {"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token},
            {"Referer": f"http://127.0.0.1:{self.port}/accounts/login/"},
        )
        if status != 302:
            raise RuntimeError(f"login of {username} answered {status}")


def client(port: int, username: str, project_id: int | None, seconds: float, start: float, out) -> None:
    """Until ``start + seconds``: /healthz (project_id None), or the annotate screen's next + submits."""
    session, latencies, submits, errors = Session(port), [], 0, 0
    htmx = {"HX-Request": "true"}
    if project_id is not None:
        session.login(username)
    while time.time() < start:
        time.sleep(0.005)
    panel = ""
    while time.time() < start + seconds:
        began = time.perf_counter()
        if project_id is None:
            status, _, _ = session.request("GET", "/healthz")
        elif not ASSIGNMENT.search(panel):
            status, panel, _ = session.request("GET", f"/projects/{project_id}/annotate/next/", headers=htmx)
        else:
            form = {"choice": "left", "strength": "2", "rationale": "", "time_spent_ms": "1200"}
            form["csrfmiddlewaretoken"] = CSRF.search(panel).group(1)
            status, panel, _ = session.request("POST", ACTION.search(panel).group(1), form, htmx)
            submits += status == 200
        latencies.append(time.perf_counter() - began)
        errors += status != 200
    out.put((latencies, submits, errors))


def measure(port: int, sessions: int, seconds: float, project_id: int | None) -> dict:
    out = multiprocessing.Queue()
    start = time.time() + 3 + 0.1 * sessions  # logins first
    procs = [
        multiprocessing.Process(target=client, args=(port, f"bench{i}", project_id, seconds, start, out))
        for i in range(sessions)
    ]
    for proc in procs:
        proc.start()
    try:
        results = _results(out, procs, deadline=time.time() + seconds + 120)
    finally:
        for proc in procs:
            if proc.is_alive() and proc.exitcode is None:
                proc.terminate()
            proc.join()
    latencies = sorted(x for r in results for x in r[0])
    return {
        "rps": len(latencies) / seconds,
        "p50": statistics.median(latencies) * 1000,
        "p95": latencies[int(0.95 * (len(latencies) - 1))] * 1000,
        "submits": sum(r[1] for r in results),
        "errors": sum(r[2] for r in results),
    }


def _results(out, procs: list, *, deadline: float) -> list:
    """Each client's result; fails fast (RuntimeError) when a client process dies without one."""
    import queue

    results = []
    while len(results) < len(procs):
        try:
            results.append(out.get(timeout=0.5))
            continue
        except queue.Empty:
            pass
        dead = [p for p in procs if p.exitcode not in (None, 0)]
        if dead:
            raise RuntimeError(f"{len(dead)} client(s) died, exit code {dead[0].exitcode} (see above)")
        if time.time() > deadline:
            raise RuntimeError(f"only {len(results)} of {len(procs)} clients reported before the deadline")
    return results


# --- orchestration -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(database_url: str, var: Path, port: int, workers: int) -> dict:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "PREFSTUDIO_VAR": str(var),
        "PREFSTUDIO_EMBEDDED_ONLY": "1",
        "DEBUG": "0",
        "SECRET_KEY": "bench-only-secret-key-" + "x" * 40,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "0",
        "SESSION_COOKIE_SECURE": "0",
        "CSRF_COOKIE_SECURE": "0",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": str(workers),
        "LOG_LEVEL": "WARNING",
        "CELERY_BROKER_URL": "memory://",
    }


def wait_healthy(port: int, proc: subprocess.Popen) -> None:
    for _ in range(200):
        if proc.poll() is not None:
            raise RuntimeError("gunicorn exited during start-up")
        try:
            if Session(port).request("GET", "/healthz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("gunicorn did not answer /healthz")


def project_ids(env: dict) -> dict[int, int]:
    code = (
        "import sys; sys.path.insert(0, '.'); from bench.annotation_load import django_setup; django_setup();"
        "from annotation.models import Project;"
        "print(','.join(f'{p.name.split()[1]}={p.pk}' for p in Project.objects.all()))"
    )
    line = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True, capture_output=True)
    return {int(k): int(v) for k, v in (p.split("=") for p in line.stdout.decode().strip().split(","))}


def run(args, database_url: str, var: Path) -> None:
    port = free_port()
    env = server_env(database_url, var, port, args.workers)
    subprocess.run(
        [sys.executable, __file__, "--child", "build", "--sessions", str(args.sessions)],
        env=env,
        cwd=ROOT,
        check=True,
    )
    ids = project_ids(env)
    gunicorn = [
        str(Path(sys.executable).parent / "gunicorn"),
        "-c",
        "prefstudio/gunicorn_conf.py",
        "--access-logfile",
        "/dev/null",
        "prefstudio.wsgi",
    ]
    server = subprocess.Popen(gunicorn, env=env, cwd=ROOT)
    ratios, expected = {}, []
    try:
        wait_healthy(port, server)
        measure(port, args.sessions, 3, None)  # warm-up: every worker has loaded its code
        for size in SIZES:  # the ceiling around each load run (a shared machine's load drifts)
            before = measure(port, args.sessions, args.seconds / 2, None)
            load = measure(port, args.sessions, args.seconds, ids[size])
            after = measure(port, args.sessions, args.seconds / 2, None)
            ceiling = {key: (before[key] + after[key]) / 2 for key in ("rps", "p50")}
            ratios[size] = load["rps"] / ceiling["rps"]
            expected.append(f"{size}={load['submits']}")
            print(
                f"  [{size:,} tasks] /healthz {ceiling['rps']:.0f} req/s (p50 {ceiling['p50']:.1f} ms);"
                f" annotate next+submit {load['rps']:.0f} req/s = {ratios[size]:.2f} of the ceiling,"
                f" p50 {load['p50']:.1f} ms, p95 {load['p95']:.1f} ms, {load['errors']} non-200"
            )
    finally:
        server.terminate()
        server.wait(timeout=30)
    subprocess.run(
        [sys.executable, __file__, "--child", "check", "--expected", ",".join(expected)],
        env=env,
        cwd=ROOT,
        check=True,
    )
    small, large = ratios[SIZES[0]], ratios[SIZES[1]]
    print(
        f"  ratio {small:.2f} at {SIZES[0]:,} tasks, {large:.2f} at {SIZES[1]:,}"
        f" ({(large - small) / small:+.0%}); targets: >= 0.5 at both, within 20%:"
        f" {'met' if min(small, large) >= 0.5 and abs(large - small) <= 0.2 * small else 'NOT met'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=16, help="concurrent annotator sessions")
    parser.add_argument("--workers", type=int, default=3, help="gunicorn workers (WEB_CONCURRENCY)")
    parser.add_argument("--seconds", type=float, default=15.0, help="each measurement's duration")
    parser.add_argument("--child", choices=["build", "check"])
    parser.add_argument("--expected", default="")
    args = parser.parse_args()
    if args.child == "build":
        return build(args.sessions)
    if args.child == "check":
        return check(args.expected)
    admin = postgres_admin_url()
    if admin is None:
        print("annotation load: skipped (no PostgreSQL at 127.0.0.1:5432 and no postgres DATABASE_URL)")
        return None
    print(
        f"annotation load: gunicorn (prefstudio/gunicorn_conf.py, sync) with {args.workers} workers,"
        f" {args.sessions} annotator sessions, {args.seconds:.0f} s per measurement, sizes {SIZES}"
    )
    with (
        scratch_database(admin, f"prefstudio_bench_annotation_{os.getpid()}") as url,
        tempfile.TemporaryDirectory(prefix="prefstudio-annotation-load-") as var,
    ):
        run(args, url, Path(var))
    return None


if __name__ == "__main__":
    main()
