"""Against the real gunicorn (the compose web server's config), over a raw socket: an anonymous client that
declares a 3 GiB multipart body, with a CSRF cookie and token of its own choosing, gets 413 after sending
4 KiB of it; a chunked body with no Content-Length gets 411. Before, the server read on until the body
ended (3 GiB reached /tmp)."""

import socket
import sys
import urllib.request

import pytest

from tests.integration.native import free_port, native_env, running, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

CSRF = "B" * 32


def send_head_and_some_body(port: int, head: str, body: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode() + body)
        sock.shutdown(socket.SHUT_WR)  # the rest of the "3 GiB" never comes: the answer must not wait for it
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def request_head(port: int, **headers: str) -> str:
    lines = [
        "POST /projects/1/import/ HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: multipart/form-data; boundary=x",
        f"Cookie: csrftoken={CSRF}",
        f"X-CSRFToken: {CSRF}",
        *(f"{name.replace('_', '-')}: {value}" for name, value in headers.items()),
    ]
    return "\r\n".join(lines) + "\r\n\r\n"


def test_gunicorn_answers_an_oversized_or_unsized_anonymous_upload_without_reading_it(tmp_path):
    port = free_port()
    env = native_env(HOST="127.0.0.1", PORT=str(port), WEB_CONCURRENCY="1", ALLOWED_HOSTS="127.0.0.1")
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "prefstudio.wsgi:application",
        "-c",
        "python:prefstudio.gunicorn_conf",
    ]
    log_path = tmp_path / "web.log"

    def healthy():
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3).status == 200
        except OSError:
            return False

    body = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n' + b"x" * 4096
    with running(command, env=env, log_path=log_path):
        wait_for(healthy, timeout=60, what="gunicorn /healthz", log_path=log_path)
        answer = send_head_and_some_body(port, request_head(port, Content_Length=str(3 * 1024**3)), body)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"The request body is 3.0\xc2\xa0GB; the limit is" in answer

        chunked = b"1000\r\n" + body[:4096] + b"\r\n"
        answer = send_head_and_some_body(port, request_head(port, Transfer_Encoding="chunked"), chunked)
        assert answer.startswith(b"HTTP/1.1 411"), answer[:200]
