"""Login lockout (django-axes), bearer-token failure throttling, and revoked or expired API tokens."""

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from prefstudio.models import ApiToken, ApiTokenFailure
from prefstudio.services import api_token_create
from tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db


def log_in(client, username, password, ip="10.0.0.1"):
    return client.post(
        reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=ip, follow=False
    )


def test_after_30_wrong_passwords_the_right_one_is_refused(client):
    UserFactory(username="carol")
    statuses = [log_in(client, "carol", f"wrong-{i}").status_code for i in range(30)]
    response = log_in(client, "carol", PASSWORD)
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
    assert "Too many login attempts" in response.content.decode()
    assert statuses[:4] == [200] * 4 and set(statuses[5:]) == {429}  # the fifth failure locks


def test_the_lockout_is_per_username_and_address_and_ends_after_the_cool_off(client, settings):
    UserFactory(username="carol")
    UserFactory(username="dave")
    for i in range(settings.AXES_FAILURE_LIMIT):
        log_in(client, "carol", f"wrong-{i}")
    assert log_in(client, "carol", PASSWORD).status_code == 429
    assert log_in(Client(), "carol", PASSWORD, ip="10.0.0.2").status_code == 302  # another address
    assert log_in(Client(), "dave", PASSWORD).status_code == 302  # another user, same address
    settings.AXES_COOLOFF_TIME = timedelta(seconds=0)
    assert log_in(Client(), "carol", PASSWORD).status_code == 302


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_bad_bearer_tokens_get_429_after_the_limit_even_with_a_good_one(manager, project, settings):
    settings.API_TOKEN_FAILURE_LIMIT = 5
    good = api_token_create(user=manager)
    client = Client(REMOTE_ADDR="10.0.0.9")
    statuses = [client.get("/api/projects", headers=bearer(f"ps_bad{i}")).status_code for i in range(8)]
    assert statuses == [401] * 5 + [429] * 3
    response = client.get("/api/projects", headers=bearer(good))
    assert response.status_code == 429
    assert "Too many failed API token attempts" in response.json()["detail"]
    assert 0 < int(response["Retry-After"]) <= settings.API_TOKEN_COOLOFF_SECONDS
    assert ApiTokenFailure.objects.get(ip_address="10.0.0.9").failures == 5
    # another address is not held back, and the hold ends after the cool-off
    assert Client(REMOTE_ADDR="10.0.0.8").get("/api/projects", headers=bearer(good)).status_code == 200
    ApiTokenFailure.objects.update(last_failure_at=timezone.now() - timedelta(hours=1))
    assert client.get("/api/projects", headers=bearer(good)).status_code == 200


def test_a_revoked_or_expired_token_is_refused(manager, project):
    revoked, expired, current = (api_token_create(user=manager, name=n) for n in ("r", "e", "c"))
    ApiToken.objects.filter(name="r").update(revoked_at=timezone.now())
    ApiToken.objects.filter(name="e").update(expires_at=timezone.now() - timedelta(seconds=1))
    client = Client()
    assert client.get("/api/projects", headers=bearer(revoked)).status_code == 401
    assert client.get("/api/projects", headers=bearer(expired)).status_code == 401
    assert client.get("/api/projects", headers=bearer(current)).status_code == 200


def test_the_token_page_creates_with_an_expiry_lists_and_revokes(manager_client, manager, annotator):
    response = manager_client.post(reverse("api-token"), {"name": "ci", "expires_in_days": "30"})
    raw = response.context["raw_token"]
    token = ApiToken.objects.get(user=manager, name="ci")
    assert abs(token.expires_at - timezone.now() - timedelta(days=30)) < timedelta(minutes=1)
    assert Client().get("/api/projects", headers=bearer(raw)).status_code == 200

    theirs = api_token_create(user=annotator)
    their_row = ApiToken.objects.get(user=annotator)
    manager_client.post(reverse("api-token-revoke", args=[their_row.pk]))
    assert Client().get("/api/projects", headers=bearer(theirs)).status_code == 200  # not the manager's

    page = manager_client.post(reverse("api-token-revoke", args=[token.pk]), follow=True).content.decode()
    assert "Token revoked" in page and "revoked " in page
    assert Client().get("/api/projects", headers=bearer(raw)).status_code == 401
