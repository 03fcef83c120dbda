"""docker-compose.yml describes the stack, and every service command in it runs natively here.

Docker is not available on these machines, so the commands are taken from the compose file itself
and executed against the local PostgreSQL/Redis (or the embedded defaults) the suite runs on.
"""

import urllib.error
import urllib.request

import pytest

from tests.integration.native import (
    compose_command,
    compose_services,
    free_port,
    native_env,
    running,
    wait_for,
)

APP_SERVICES = {"web", "worker", "worker-gpu"}


def test_compose_declares_every_service_with_healthchecks_and_volumes():
    services = compose_services()
    assert set(services) == {"postgres", "redis", "web", "worker", "worker-gpu"}
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"
    for name in APP_SERVICES:
        volumes = {v.split(":")[0] for v in services[name]["volumes"]}
        assert {"media", "artifacts", "models"} <= volumes
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://")
        assert env["CELERY_BROKER_URL"].startswith("redis://")
        assert env["DEBUG"] == "false"


def test_compose_routes_workers_to_their_queues():
    worker, gpu = compose_command("worker"), compose_command("worker-gpu")
    assert worker[worker.index("-Q") + 1] == "cpu"
    assert gpu[gpu.index("-Q") + 1] == "gpu"
    assert gpu[gpu.index("--concurrency") + 1] == "1"
    assert gpu[gpu.index("--prefetch-multiplier") + 1] == "1"
    service = compose_services()["worker-gpu"]
    assert service["profiles"] == ["gpu"]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def _get(url: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"X-Forwarded-Proto": "https"})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.mark.django_db(transaction=True)
def test_web_service_command_migrates_collects_static_and_serves(tmp_path):
    port = free_port()
    env = native_env(
        DEBUG="false",
        SECRET_KEY="a-test-only-secret-that-is-long-and-random-enough-0123456789",
        ALLOWED_HOSTS="127.0.0.1",
        HOST="127.0.0.1",
        PORT=str(port),
        WEB_CONCURRENCY="1",
        STATIC_ROOT=str(tmp_path / "static"),
    )
    log_path = tmp_path / "web.log"
    base = f"http://127.0.0.1:{port}"

    def healthy():
        try:
            return _get(f"{base}/healthz")[0] == 200
        except OSError:
            return False

    with running(compose_command("web"), env=env, log_path=log_path):
        wait_for(healthy, timeout=90, what="gunicorn /healthz", log_path=log_path)
        status, _ = _get(f"{base}/")
        assert status == 302, "anonymous visitors are sent to the login page"
        status, body = _get(f"{base}/accounts/login/")
        assert status == 200 and b"Log in" in body
        css = body.split(b'href="/static/css/')[1].split(b'"')[0].decode()
        assert _get(f"{base}/static/css/{css}")[0] == 200, "whitenoise serves the collected, hashed CSS"
    assert "Booting worker" in log_path.read_text()
