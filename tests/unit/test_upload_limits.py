"""Request bodies are refused before they are read; uploads stop at UPLOAD_MAX_BYTES (prefstudio/uploads.py).

The WSGI tests call the real handler (every middleware) with a ``wsgi.input`` that counts what is read
from it: a well-formed multipart upload of up to ``CAP`` bytes, as an attacker would stream it.
"""

import io

import pytest
from django.core.files import uploadhandler
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.urls import reverse

from annotation.models import ImportJob
from prefstudio.services import api_token_create

pytestmark = pytest.mark.django_db

BOUNDARY = "----attack"
CAP = 1024 * 1024
CSRF = "A" * 32  # a self-chosen CSRF cookie and token: they match, so CSRF alone would read the body


class CountingInput:
    """A multipart body with one file field; ``read`` counts every byte handed out (at most CAP)."""

    def __init__(self):
        self.head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self.read_bytes = 0

    def read(self, size=-1):
        left = CAP - self.read_bytes
        size = left if size is None or size < 0 else min(size, left)
        start = self.read_bytes
        self.read_bytes += size
        return (self.head[start : start + size] + b"x" * size)[:size]

    def readline(self, size=-1):
        return self.read(size)


def call_wsgi(path: str, *, content_length: str | None, cookies: str = "", **headers):
    stream = CountingInput()
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": stream,
        "wsgi.errors": io.StringIO(),
        "CONTENT_TYPE": f"multipart/form-data; boundary={BOUNDARY}",
        "HTTP_COOKIE": f"csrftoken={CSRF}; {cookies}",
        "HTTP_X_CSRFTOKEN": CSRF,
        **{f"HTTP_{name.upper()}": value for name, value in headers.items()},
    }
    if content_length is not None:
        environ["CONTENT_LENGTH"] = content_length
    statuses = []
    # as django.test.Client does: the test's database connection stays open across the request
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        response = WSGIHandler()(environ, lambda status, _headers, *_: statuses.append(status))
        body = b"".join(response)
        response.close()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    return int(statuses[0].split()[0]), body.decode(), stream.read_bytes


def session_cookie(client, user) -> str:
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


def test_an_anonymous_3_gib_upload_is_answered_413_before_a_byte_is_read(project):
    status, body, read = call_wsgi(f"/projects/{project.pk}/import/", content_length=str(3 * 1024**3))
    assert (status, read) == (413, 0)
    assert "The request body is 3.0\xa0GB; the limit is" in body


def test_an_anonymous_small_upload_is_refused_before_it_is_read(project):
    status, body, read = call_wsgi(f"/projects/{project.pk}/import/", content_length="8000")
    assert (status, read) == (403, 0)
    assert body == "Log in before uploading files."


def test_a_body_without_content_length_is_refused_unread(project):
    status, body, read = call_wsgi(
        f"/projects/{project.pk}/import/", content_length=None, transfer_encoding="chunked"
    )
    assert (status, read) == (411, 0)
    assert "Content-Length" in body


def test_a_logged_in_body_over_the_limit_is_413_before_it_is_read(client, manager, project, settings):
    settings.UPLOAD_MAX_BYTES = 1000
    length = 1000 + settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1
    cookies = session_cookie(client, manager)
    status, body, read = call_wsgi(
        f"/projects/{project.pk}/import/", content_length=str(length), cookies=cookies
    )
    assert (status, read) == (413, 0)
    assert "(uploads up to 1000\xa0bytes)" in body


def test_a_bad_bearer_token_with_an_upload_is_401_before_the_body_is_read(project):
    path = f"/api/projects/{project.pk}/imports"
    status, _, read = call_wsgi(path, content_length=str(CAP), authorization="Bearer ps_wrong")
    assert (status, read) == (401, 0)


@pytest.fixture
def temp_file_sizes(monkeypatch, settings, tmp_path):
    """Every temporary upload file goes to disk (none in memory); the largest size any reached."""
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)
    sizes = []
    original = uploadhandler.TemporaryFileUploadHandler.receive_data_chunk

    def receive(self, raw_data, start):
        original(self, raw_data, start)
        sizes.append(self.file.tell())

    monkeypatch.setattr(uploadhandler.TemporaryFileUploadHandler, "receive_data_chunk", receive)
    return sizes


def test_a_logged_in_upload_past_the_limit_stops_at_the_limit(
    manager_client, project, settings, temp_file_sizes
):
    settings.UPLOAD_MAX_BYTES = 200 * 1024
    big = io.BytesIO(b'{"prompt": "q", "chosen": "a", "rejected": "b"}\n' * 40_000)  # 1.9 MB
    big.name = "big.jsonl"
    response = manager_client.post(reverse("import-upload", args=[project.pk]), {"file": big})
    assert response.status_code == 400
    assert "The file is larger than the upload limit of 200.0\xa0KB." in response.content.decode()
    assert temp_file_sizes and max(temp_file_sizes) <= 200 * 1024
    assert not ImportJob.objects.exists()
    assert not list(settings.MEDIA_ROOT.rglob("*.jsonl"))


def test_an_api_upload_past_the_limit_is_413_and_stops_at_the_limit(
    client, manager, project, settings, temp_file_sizes
):
    settings.UPLOAD_MAX_BYTES = 100 * 1024
    big = io.BytesIO(b"x" * (1024 * 1024))
    big.name = "big.jsonl"
    token = api_token_create(user=manager)
    response = client.post(
        f"/api/projects/{project.pk}/imports", {"file": big}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 413
    assert response.json() == {"detail": "The file is larger than the upload limit of 100.0\xa0KB."}
    assert max(temp_file_sizes) <= 100 * 1024
