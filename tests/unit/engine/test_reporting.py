"""The engine's reports to the studio (``--report-to``): a studio out of reach for a moment keeps the
points for the next post instead of stopping the run; a slow studio never holds up the training thread;
a cancel arrives in a reply; a refusal is an error naming the status."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from training.engine.reporting import ReportError, StudioReporter


class _Studio(BaseHTTPRequestHandler):
    bodies: list = []
    reply = {"attempt": 1, "cancel": False}
    status = 200
    answer = threading.Event()  # cleared: the studio holds its replies (a slow studio)

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append((self.headers["Authorization"], body))
        type(self).answer.wait(30)
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(type(self).reply).encode())

    def log_message(self, *args):
        return None


@pytest.fixture
def studio():
    _Studio.bodies, _Studio.status, _Studio.reply = [], 200, {"attempt": 1, "cancel": False}
    _Studio.answer.set()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Studio)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/jobs/9/report"
    server.shutdown()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_points_wait_out_a_studio_out_of_reach_and_a_cancel_arrives_in_a_reply(studio):
    reporter = StudioReporter(f"http://127.0.0.1:{_closed_port()}/api/jobs/9/report", token="ps_x")
    reporter.attempt = 1
    reporter.log({"loss": 0.7}, 1)  # nobody listens: kept, and the run goes on
    reporter.log({"loss": 0.6}, 2)
    with pytest.raises(OSError):
        reporter.flush()
    assert [p["step"] for p in reporter.points] == [1, 2]

    reporter.url = studio
    _Studio.reply = {"attempt": 1, "cancel": True}
    reporter.log({"loss": 0.5}, 3)
    reporter.flush()
    [(auth, body)] = _Studio.bodies
    assert auth == "Bearer ps_x" and body["attempt"] == 1
    assert [p["step"] for p in body["points"]] == [1, 2, 3] and reporter.points == []
    assert reporter.should_cancel()

    reporter.finish("cancelled", step=3)
    assert _Studio.bodies[-1][1]["outcome"] == "cancelled" and _Studio.bodies[-1][1]["step"] == 3


def test_a_refused_report_is_an_error_with_the_status(studio):
    _Studio.status, _Studio.reply = 409, {"detail": "job 9 is running, not queued"}
    with pytest.raises(ReportError, match="HTTP 409.*not queued"):
        StudioReporter(studio, token="ps_x").start()
    with pytest.raises(ReportError, match="an http"):
        StudioReporter("file:///etc/passwd", token="ps_x")


def test_the_training_thread_logs_on_while_a_post_waits_for_a_slow_studio(studio):
    reporter = StudioReporter(studio, token="ps_x")
    reporter.start()
    _Studio.answer.clear()  # from now on every post hangs until released
    reporter.log({"loss": 0.7}, 1)
    try:
        deadline = time.monotonic() + 10
        while len(_Studio.bodies) < 2 and time.monotonic() < deadline:  # the sender's post is in flight
            time.sleep(0.05)
        assert len(_Studio.bodies) == 2, "the sender thread never posted step 1"
        steps = threading.Thread(target=lambda: [reporter.log({"loss": 0.6}, s) for s in range(2, 50)])
        steps.start()
        steps.join(5)
        assert not steps.is_alive(), "log() waited for the studio's reply"
        reporter.on_saved(Path("/runs/job-9/checkpoint-2"))
    finally:
        _Studio.answer.set()
    reporter.finish("succeeded", step=49)
    posted = [p["step"] for _, body in _Studio.bodies[1:] for p in body.get("points", [])]
    assert posted == list(range(1, 50))  # every step once, in order
    assert [name for _, body in _Studio.bodies for name in body.get("saved", [])] == ["checkpoint-2"]
    assert _Studio.bodies[-1][1]["outcome"] == "succeeded"
