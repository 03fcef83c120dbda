"""`studio` stops a child group that ignores SIGTERM: SIGKILL after the grace period, orphans reaped."""

import os
import subprocess
import sys
import textwrap

import pytest

from tests.integration.test_make_run import ROOT, _group_alive

SCRIPT = textwrap.dedent(
    """
    import subprocess, sys, time
    from prefstudio.management.commands import studio
    studio.STOP_SECONDS = 1.0
    studio._become_subreaper()
    # bash and its sleep both ignore SIGTERM (an ignored signal survives exec)
    stubborn = subprocess.Popen(
        ["bash", "-c", "trap '' TERM; sleep 300 & sleep 300 & wait"], start_new_session=True
    )
    time.sleep(0.5)
    print(stubborn.pid, flush=True)
    print(studio.stop_groups([("worker", stubborn)]), flush=True)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups and prctl are Linux here")
def test_a_group_that_ignores_sigterm_is_killed_and_reaped():
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "prefstudio.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    pgid, *report = out.stdout.strip().splitlines()
    assert "The worker did not stop within 1 s; killed it and what it started." in report
    assert report[-1] == "Stopped the server and the worker."
    assert not _group_alive(int(pgid))
