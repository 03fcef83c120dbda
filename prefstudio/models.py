"""Account-level records that belong to no single app: API tokens and failed token attempts."""

import hashlib
import secrets

from django.conf import settings
from django.db import models


def api_token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiToken(models.Model):
    """A per-user bearer token; only its sha256 is stored."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, default="default")
    key_hash = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=8)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Refused from then on; none: never.")
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"{self.prefix}… ({self.user})"

    def usable_at(self, when) -> bool:
        return self.revoked_at is None and (self.expires_at is None or when < self.expires_at)

    @staticmethod
    def new_raw_key() -> str:
        return "ps_" + secrets.token_urlsafe(32)


class ApiTokenFailure(models.Model):
    """Failed bearer-token attempts from one client address, in the current window (shared by all workers)."""

    ip_address = models.GenericIPAddressField(unique=True)
    failures = models.PositiveIntegerField(default=0)
    first_failure_at = models.DateTimeField()
    last_failure_at = models.DateTimeField()

    def __str__(self):
        return f"{self.ip_address}: {self.failures}"
