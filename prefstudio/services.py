"""API tokens: create, revoke, authenticate; failed attempts counted per client address in the database."""

import math
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from .models import ApiToken, ApiTokenFailure, api_token_hash


def api_token_create(*, user, name: str = "default", expires_at: datetime | None = None) -> str:
    """Create a token for ``user`` and return the raw key; it is shown once and stored hashed."""
    raw = ApiToken.new_raw_key()
    ApiToken.objects.create(
        user=user, name=name[:100], key_hash=api_token_hash(raw), prefix=raw[3:11], expires_at=expires_at
    )
    return raw


def api_token_revoke(*, user, token_id: int) -> bool:
    """Revoke one of ``user``'s tokens; False when it is not theirs or was already revoked."""
    tokens = ApiToken.objects.filter(pk=token_id, user=user, revoked_at__isnull=True)
    return tokens.update(revoked_at=timezone.now()) == 1


def api_token_user(*, raw: str):
    """The active user whose unrevoked, unexpired token this is (its use recorded), else None."""
    now = timezone.now()
    row = ApiToken.objects.select_related("user").filter(key_hash=api_token_hash(raw)).first()
    if row is None or not row.usable_at(now) or not row.user.is_active:
        return None
    ApiToken.objects.filter(pk=row.pk).update(last_used_at=now)
    return row.user


def _cooloff() -> timedelta:
    return timedelta(seconds=settings.API_TOKEN_COOLOFF_SECONDS)


def api_token_failure_record(*, ip_address: str) -> None:
    """Count a failed token attempt from ``ip_address``; failures older than the cool-off start afresh."""
    now = timezone.now()
    rows = ApiTokenFailure.objects.filter(ip_address=ip_address)
    if rows.filter(last_failure_at__gt=now - _cooloff()).update(
        failures=F("failures") + 1, last_failure_at=now
    ):
        return
    ApiTokenFailure.objects.update_or_create(
        ip_address=ip_address, defaults={"failures": 1, "first_failure_at": now, "last_failure_at": now}
    )


def api_token_retry_after(*, ip_address: str) -> int:
    """Seconds until ``ip_address`` may try a token again: 0 unless it reached the failure limit."""
    row = ApiTokenFailure.objects.filter(ip_address=ip_address).first()
    if row is None or row.failures < settings.API_TOKEN_FAILURE_LIMIT:
        return 0
    left = (row.last_failure_at + _cooloff() - timezone.now()).total_seconds()
    return max(0, math.ceil(left))
