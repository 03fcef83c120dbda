"""Request bodies are bounded before anything reads them, and uploads stop at ``UPLOAD_MAX_BYTES``.

Three layers, one setting (``UPLOAD_MAX_BYTES``; gunicorn itself has no body limit):

* ``RequestBodyLimitMiddleware`` (ahead of CSRF, whose ``process_view`` reads ``request.POST``) answers 413
  from the ``Content-Length`` header alone: a multipart body may carry ``UPLOAD_MAX_BYTES`` of files plus
  ``DATA_UPLOAD_MAX_MEMORY_SIZE`` of fields, any other body only the fields. A body without a
  ``Content-Length`` (``Transfer-Encoding: chunked``) is refused with 411, so no body is of unknown size.
* ``AnonymousBodyMiddleware`` (after authentication, still before any ``process_view``) refuses bodies over
  ``ANONYMOUS_BODY_MAX_BYTES`` and multipart bodies (but to the login forms, which are small) from clients
  with no session. API calls with an ``Authorization`` header pass: ninja checks the token before it parses.
* ``UploadLimitHandler`` (first in ``FILE_UPLOAD_HANDLERS``) passes file data on to the temporary-file
  handler only while the request's files stay within the limit, then stops the upload; the view sees
  ``upload_was_cut_off(request)``.
"""

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import resolve_url
from django.template.defaultfilters import filesizeformat
from django.urls import reverse

API_PREFIX = "/api/"  # prefstudio/urls.py mounts the ninja API here
ANONYMOUS_BODY_MAX_BYTES = 16 * 1024  # a login form (and the admin's) is a few hundred bytes


def _refuse(request: HttpRequest, status: int, message: str) -> HttpResponse:
    if request.path.startswith(API_PREFIX):
        return JsonResponse({"detail": message}, status=status)
    return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")


def _is_multipart(request: HttpRequest) -> bool:
    return request.META.get("CONTENT_TYPE", "").lower().startswith("multipart/")


def request_body_max_bytes(request: HttpRequest) -> int:
    fields = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if fields is None:  # Django's "no limit" for fields: bound them by the upload limit instead
        fields = settings.UPLOAD_MAX_BYTES
    return settings.UPLOAD_MAX_BYTES + fields if _is_multipart(request) else fields


def _declared_length(request: HttpRequest) -> int | None:
    """The body's ``Content-Length``: 0 when there is no body, None when it cannot be known."""
    raw = request.META.get("CONTENT_LENGTH", "")
    if raw in ("", None):
        return None if request.META.get("HTTP_TRANSFER_ENCODING") else 0
    try:
        length = int(raw)
    except ValueError:
        return None
    return length if length >= 0 else None


class RequestBodyLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        length = _declared_length(request)
        if length is None:
            return _refuse(request, 411, "Send the request body with a valid Content-Length header.")
        limit = request_body_max_bytes(request)
        if length > limit:
            return _refuse(
                request,
                413,
                f"The request body is {filesizeformat(length)}; the limit is {filesizeformat(limit)} "
                f"(uploads up to {filesizeformat(settings.UPLOAD_MAX_BYTES)}).",
            )
        return self.get_response(request)


def _login_paths() -> set[str]:
    return {resolve_url(settings.LOGIN_URL), reverse("admin:login")}


class AnonymousBodyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        if request.user.is_authenticated or self._api_credentials(request):
            return self.get_response(request)
        if int(request.META.get("CONTENT_LENGTH") or 0) > ANONYMOUS_BODY_MAX_BYTES:
            return _refuse(request, 413, "Log in before sending a request body this large.")
        if _is_multipart(request) and request.path not in _login_paths():
            if request.path.startswith(API_PREFIX):  # what ninja answers any call without credentials
                return JsonResponse({"detail": "Unauthorized"}, status=401)
            return _refuse(request, 403, "Log in before uploading files.")
        return self.get_response(request)

    @staticmethod
    def _api_credentials(request: HttpRequest) -> bool:
        return request.path.startswith(API_PREFIX) and bool(request.META.get("HTTP_AUTHORIZATION"))


class UploadLimitHandler(FileUploadHandler):
    """Passes chunks on while the request's file data is within ``UPLOAD_MAX_BYTES``, then stops."""

    def __init__(self, request=None):
        super().__init__(request)
        self.received = 0

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > settings.UPLOAD_MAX_BYTES:
            if self.request is not None:
                self.request.upload_cut_off = True
            # The rest of the body (bounded by RequestBodyLimitMiddleware) is read and discarded, so that
            # the client gets the response rather than a reset connection.
            raise StopUpload(connection_reset=False)
        return raw_data

    def file_complete(self, file_size):
        return None  # the next handler (memory or temporary file) makes the file


def upload_was_cut_off(request: HttpRequest) -> bool:
    return getattr(request, "upload_cut_off", False)


def upload_limit_message() -> str:
    return f"The file is larger than the upload limit of {filesizeformat(settings.UPLOAD_MAX_BYTES)}."
