"""What a new user meets before any project: the login page names the demo accounts once the demo is
loaded, and the favicon is served to anyone."""

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings

from prefstudio.management.commands.load_demo import DEMO_PASSWORD


@pytest.mark.django_db
def test_the_login_page_names_the_demo_users_only_when_they_exist(client):
    assert 'id="demo-users"' not in client.get("/accounts/login/").content.decode()
    for name in ("demo-manager", "demo-annotator"):
        get_user_model().objects.create(username=name)
    with override_settings(DEBUG=True):
        page = client.get("/accounts/login/").content.decode()
    assert "<code>demo-annotator</code> or <code>demo-manager</code>" in page and DEMO_PASSWORD in page
    with override_settings(DEBUG=False):
        page = client.get("/accounts/login/").content.decode()
    assert 'id="demo-users"' in page and DEMO_PASSWORD not in page  # a deployment does not show it


@pytest.mark.django_db
def test_the_favicon_is_linked_and_served_without_a_login(client):
    assert 'rel="icon"' in client.get("/accounts/login/").content.decode()
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"].endswith("favicon.svg")
