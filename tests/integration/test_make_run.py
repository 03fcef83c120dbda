"""`make run`'s steps on the embedded defaults: SQLite + the filesystem broker, no server processes.

migrate → load_demo (twice: the second keeps the data) → `manage.py studio`, which serves the app and a
Celery worker; a confirmed import reaches the worker through the filesystem broker; Ctrl-C stops both.
"""

import http.cookiejar
import os
import re
import signal
import subprocess
import sys
import urllib.parse
import urllib.request

import pytest

from tests.integration.native import ROOT, free_port, wait_for

ENQUEUE = """
from pathlib import Path
from django.core.files.uploadedfile import SimpleUploadedFile
from django.contrib.auth import get_user_model
from annotation.models import Project
from annotation.services.import_jobs import import_job_confirm, import_job_create
row = '{"prompt": "Q%d?", "chosen": "good %d", "rejected": "bad %d"}'
rows = "\\n".join(row % (i, i, i) for i in range(25))
project = Project.objects.get(name="Demo: helpful and honest answers")
user = get_user_model().objects.get(username="demo-manager")
job = import_job_create(project=project, user=user, upload=SimpleUploadedFile("more.jsonl", rows.encode()))
import_job_confirm(job=job)
print(job.pk)
"""
STATUS = "from annotation.models import ImportJob; print(ImportJob.objects.get(pk={pk}).state)"


def _embedded_env(var_dir) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
    env.update(PREFSTUDIO_VAR=str(var_dir), PYTHONUNBUFFERED="1")
    return env


def _manage(env, *args, timeout=120) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _login(base: str) -> urllib.request.OpenerDirector:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"{base}/accounts/login/", timeout=10).read()
    token = next(c.value for c in jar if c.name == "csrftoken")
    form = {"username": "demo-annotator", "password": "prefstudio-demo", "csrfmiddlewaretoken": token}
    opener.open(
        urllib.request.Request(
            f"{base}/accounts/login/", data=urllib.parse.urlencode(form).encode(), headers={"Referer": base}
        ),
        timeout=10,
    ).read()
    return opener


def _ignore_interrupts() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.slow
def test_make_run_serves_the_demo_with_a_worker_and_stops_on_ctrl_c(tmp_path):
    env = _embedded_env(tmp_path)
    _manage(env, "migrate", "--noinput")
    first = _manage(env, "load_demo", timeout=900)  # a cold model cache trains the digits model first
    assert "demo-manager" in first and "prefstudio-demo" in first
    assert _manage(env, "load_demo") == first, "a second load keeps the same data"

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "studio.log"
    with open(log_path, "wb") as log:
        studio = subprocess.Popen(
            [sys.executable, "manage.py", "studio", "--addr", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_ignore_interrupts,  # as `make run &` in a script starts it: Ctrl-C must still work
        )
    try:
        wait_for(
            lambda: _reachable(f"{base}/healthz"), timeout=60, what="the studio server", log_path=log_path
        )
        home = _login(base).open(f"{base}/", timeout=10).read().decode()
        assert "Demo: helpful and honest answers" in home

        job_id = int(_manage(env, "shell", "-v", "0", "-c", ENQUEUE).strip().splitlines()[-1])
        wait_for(
            lambda: _manage(env, "shell", "-v", "0", "-c", STATUS.format(pk=job_id)).strip() == "succeeded",
            timeout=120,
            interval=1,
            what="the worker to run the import over the filesystem broker",
            log_path=log_path,
        )
    finally:
        os.killpg(studio.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends to the whole group
        studio.wait(timeout=40)
    log = log_path.read_text()
    assert "Stopped the server and the worker" in log
    worker_pid, web_pid = map(int, re.search(r"worker pid (\d+), web server pid (\d+)", log).groups())
    for pid in (studio.pid, worker_pid, web_pid):  # each led its own process group
        assert not _group_alive(pid), "Ctrl-C stopped the server, the worker and everything they started"


def _reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
