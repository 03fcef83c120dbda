"""The JSON API for scripts (django-ninja): OpenAPI at /api/openapi.json, docs at /api/docs.

Every route needs a bearer token or a logged-in session (``prefstudio.auth``); unauthenticated calls
get 401 JSON from ninja, never the login redirect (see ``api_urls``).
"""

import math
from functools import wraps

from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import JsonResponse
from ninja import NinjaAPI
from ninja.errors import Throttled
from ninja.errors import ValidationError as NinjaValidationError

from annotation.api import router as annotation_router
from training.api import router as training_router

from .auth import api_auth, request_user_from_token_or_session
from .uploads import upload_limit_message, upload_was_cut_off

api = NinjaAPI(title="PrefStudio API", version="1", urls_namespace="api", auth=api_auth)
api.add_router("/", annotation_router)
api.add_router("/jobs", training_router)


@api.exception_handler(PermissionDenied)
def _forbidden(request, exc):
    return api.create_response(request, {"detail": str(exc) or "Forbidden."}, status=403)


@api.exception_handler(DjangoValidationError)
def _invalid(request, exc):
    if hasattr(exc, "error_dict"):
        detail = [{"loc": ["body", f], "msg": " ".join(m)} for f, m in exc.message_dict.items()]
    else:
        detail = [{"loc": ["body"], "msg": message} for message in exc.messages]
    return api.create_response(request, {"detail": detail}, status=422)


def _throttled_response(response, exc: Throttled):
    if exc.wait:
        response["Retry-After"] = str(math.ceil(exc.wait))
    return response


@api.exception_handler(Throttled)
def _throttled(request, exc):
    return _throttled_response(api.create_response(request, {"detail": str(exc)}, status=429), exc)


@api.exception_handler(NinjaValidationError)
def _invalid_input(request, exc):
    if upload_was_cut_off(request):  # the file is missing because UploadLimitHandler stopped it
        return api.create_response(request, {"detail": upload_limit_message()}, status=413)
    return api.create_response(request, {"detail": exc.errors}, status=422)


def _schema_login(view):
    """The schema is for logged-in users and token holders; others get 401 JSON."""

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        try:
            user = request_user_from_token_or_session(request)
        except Throttled as exc:
            return _throttled_response(JsonResponse({"detail": str(exc)}, status=429), exc)
        if user is None:
            return JsonResponse({"detail": "Unauthorized"}, status=401)
        return view(request, *args, **kwargs)

    return wrapped


def api_urls():
    """``api.urls`` with every API route let through LoginRequiredMiddleware to ninja's own auth.

    The docs page stays a login-protected page (the middleware redirects to the login form).
    """
    patterns, app_name, namespace = api.urls
    for pattern in patterns:
        if pattern.name == "openapi-view":
            continue
        if pattern.name == "openapi-json":
            pattern.callback = _schema_login(pattern.callback)
        pattern.callback = login_not_required(pattern.callback)
    return patterns, app_name, namespace
