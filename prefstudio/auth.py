"""API authentication: per-user bearer tokens, or the browser's session (with CSRF on unsafe methods)."""

from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone
from ninja.security import APIKeyCookie, HttpBearer

from .models import ApiToken, api_token_hash


class BearerTokenAuth(HttpBearer):
    """``Authorization: Bearer <token>``: the sha256 of the raw key must match a stored token."""

    def authenticate(self, request: HttpRequest, token: str):
        token = (token or "").strip()
        if not token or len(token) > 200:
            return None
        row = ApiToken.objects.select_related("user").filter(key_hash=api_token_hash(token)).first()
        if row is None or not row.user.is_active:
            return None
        ApiToken.objects.filter(pk=row.pk).update(last_used_at=timezone.now())
        request.user = row.user
        return row.user


class SessionAuth(APIKeyCookie):
    """A logged-in browser session; the CSRF check runs (unsafe methods) only when there is one."""

    param_name: str = settings.SESSION_COOKIE_NAME

    def _get_key(self, request: HttpRequest):
        if not request.user.is_authenticated:
            return None
        return super()._get_key(request)

    def authenticate(self, request: HttpRequest, key):
        return request.user if request.user.is_authenticated else None


api_auth = [BearerTokenAuth(), SessionAuth()]


def request_user_from_token_or_session(request: HttpRequest):
    """The user behind a request that is not routed through ninja (the OpenAPI schema view)."""
    if request.user.is_authenticated:
        return request.user
    return BearerTokenAuth()(request)
