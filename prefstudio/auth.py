"""API authentication: per-user bearer tokens, or the browser's session (with CSRF on unsafe methods)."""

from axes.helpers import get_client_ip_address
from django.conf import settings
from django.http import HttpRequest
from ninja.errors import HttpError, Throttled
from ninja.security import APIKeyCookie, HttpBearer

from .services import api_token_failure_record, api_token_retry_after, api_token_user


class TokenAttemptsThrottled(Throttled):
    """429 for an address with too many failed token attempts (``Retry-After`` set in prefstudio.api)."""

    def __init__(self, wait: int):
        HttpError.__init__(
            self, 429, f"Too many failed API token attempts from this address; try again in {wait} s."
        )
        self.wait = wait


class BearerTokenAuth(HttpBearer):
    """``Authorization: Bearer <token>``: the sha256 of the raw key must match a usable stored token.

    A client address with ``API_TOKEN_FAILURE_LIMIT`` recent failures is answered 429, without its token
    being looked at, until ``API_TOKEN_COOLOFF_SECONDS`` after its last failure (the count is in the
    database, so every gunicorn worker sees it; the address is the one axes uses for logins).
    """

    def authenticate(self, request: HttpRequest, token: str):
        ip_address = get_client_ip_address(request) or "0.0.0.0"  # noqa: S104 (a bucket, not a bind)
        wait = api_token_retry_after(ip_address=ip_address)
        if wait:
            raise TokenAttemptsThrottled(wait)
        token = (token or "").strip()
        user = api_token_user(raw=token) if 0 < len(token) <= 200 else None
        if user is None:
            api_token_failure_record(ip_address=ip_address)
            return None
        request.user = user
        return user


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
