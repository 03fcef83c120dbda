"""Accounts a manager creates from the project settings: the service, the page, who may use it, and the
one-time set-password link (works once, expires, needs no login)."""

from datetime import datetime, timedelta
from html import unescape
from urllib.parse import urlencode, urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from annotation.models import Membership, Role
from annotation.services.accounts import account_create_for_project, account_link_renew, account_link_tokens
from tests.factories import MembershipFactory, ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db
NEW_PASSWORD = "violet-anchor-harbour-52"


def settings_url(project) -> str:
    return reverse("project-settings", args=[project.pk])


def create_on_page(client, project, **fields):
    data = {"action": "account", **{f"account-{name}": value for name, value in fields.items()}}
    return client.post(settings_url(project), data)


def set_password(client, path: str, password: str = NEW_PASSWORD):
    """Open the link as the invitee does (it redirects to the form), then post the form."""
    opened = client.get(path, follow=True)
    if not opened.context["validlink"]:
        return opened
    form_path = opened.redirect_chain[-1][0]
    body = urlencode({"new_password1": password, "new_password2": password})  # as a browser's form sends it
    return client.post(form_path, body, content_type="application/x-www-form-urlencoded", follow=True)


def test_the_service_creates_a_user_without_a_password_and_an_annotator_membership(project):
    before = timezone.now()
    invite = account_create_for_project(project=project, username="bob", email="bob@example.org")
    user = invite.membership.user
    assert (user.username, user.email, user.has_usable_password()) == ("bob", "bob@example.org", False)
    assert invite.membership.project == project and invite.membership.role == Role.ANNOTATOR
    assert invite.set_password_path.startswith("/accounts/set-password/")
    assert before + timedelta(days=7) <= invite.expires_at <= timezone.now() + timedelta(days=7)


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"username": "Manager"}, "username", "A user named 'Manager' already exists."),
        ({"username": "bad name!"}, "username", "Enter a valid username"),
        ({"username": "  "}, "username", "This field cannot be blank."),
        ({"username": "x" * 151}, "username", "at most 150 characters"),
        ({"username": "carol", "email": "not-an-email"}, "email", "Enter a valid email address."),
        ({"username": "carol", "role": "owner"}, "role", "role must be one of manager, annotator"),
    ],
)
def test_the_service_names_the_field_it_refuses(project, fields, field, message):
    with pytest.raises(ValidationError) as raised:
        account_create_for_project(project=project, **fields)
    assert message in " ".join(raised.value.message_dict[field])
    assert not get_user_model().objects.filter(username="carol").exists()


def test_the_settings_page_defaults_both_role_fields_to_annotator(manager_client, project):
    page = manager_client.get(settings_url(project))
    assert page.context["member_form"]["role"].value() == Role.ANNOTATOR
    assert page.context["account_form"]["role"].value() == Role.ANNOTATOR
    assert page.content.decode().count('<option value="annotator" selected>') == 2


def test_the_manager_sees_the_link_once_and_it_works_once(manager_client, project):
    response = create_on_page(manager_client, project, username="bob", email="", role="annotator")
    assert response.status_code == 302
    shown = manager_client.get(settings_url(project))
    link = shown.context["invite"]["url"]
    assert link.startswith("http://testserver/accounts/set-password/") and link in unescape(shown.text)
    assert manager_client.get(settings_url(project)).context["invite"] is None  # shown once
    assert Membership.objects.get(user__username="bob", project=project).role == Role.ANNOTATOR

    invitee = Client()  # a fresh browser: not logged in
    done = set_password(invitee, urlsplit(link).path)
    assert done.redirect_chain[-1][0] == reverse("login")
    assert "Password set for bob" in done.text
    body = urlencode({"username": "bob", "password": NEW_PASSWORD})
    logged_in = invitee.post(reverse("login"), body, content_type="application/x-www-form-urlencoded")
    assert logged_in.status_code == 302 and logged_in.url == reverse("home")

    again = Client().get(urlsplit(link).path, follow=True)
    assert again.context["validlink"] is False and "has been used already or has expired" in again.text


def test_the_link_expires(project, monkeypatch, settings):
    settings.PASSWORD_RESET_TIMEOUT = 7 * 24 * 3600
    invite = account_create_for_project(project=project, username="late")
    later = datetime.now() + timedelta(days=7, minutes=1)
    monkeypatch.setattr(account_link_tokens, "_now", lambda: later)
    response = Client().get(invite.set_password_path, follow=True)
    assert response.context["validlink"] is False
    assert not get_user_model().objects.get(username="late").has_usable_password()


def test_a_password_reset_token_is_not_a_set_password_link(project):
    from django.contrib.auth.tokens import default_token_generator

    invite = account_create_for_project(project=project, username="bob")
    uidb64 = invite.set_password_path.split("/")[3]
    reset_token = default_token_generator.make_token(invite.membership.user)
    path = reverse("account-set-password", kwargs={"uidb64": uidb64, "token": reset_token})
    assert Client().get(path, follow=True).context["validlink"] is False


def test_a_refused_name_is_shown_escaped_next_to_its_field(manager_client, project):
    response = create_on_page(manager_client, project, username="<script>alert(1)</script>", role="annotator")
    assert response.status_code == 200
    assert "username" in response.context["account_form"].errors
    assert "<script>alert(1)</script>" not in response.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text

    create_on_page(manager_client, project, username="o'neil", role="annotator")  # refused: the quote
    taken = create_on_page(manager_client, project, username="Manager", role="annotator")
    assert "A user named &#x27;Manager&#x27; already exists." in taken.text


def test_annotators_get_403_and_outsiders_404(annotator_client, project, client, annotator):
    assert create_on_page(annotator_client, project, username="sneaky", role="manager").status_code == 403
    outsider = UserFactory(username="outsider", is_staff=True)
    client.force_login(outsider)
    assert create_on_page(client, project, username="sneaky", role="annotator").status_code == 404
    assert not get_user_model().objects.filter(username="sneaky").exists()


def test_a_non_staff_manager_creates_accounts_for_their_own_projects_only(client):
    own, other = ProjectFactory(), ProjectFactory()
    lead = UserFactory(username="lead", is_staff=False)
    MembershipFactory(project=own, user=lead, role=Role.MANAGER)
    client.force_login(lead)
    assert create_on_page(client, own, username="dana", role="annotator").status_code == 302
    assert create_on_page(client, other, username="erin", role="annotator").status_code == 404
    assert list(Membership.objects.filter(user__username="dana").values_list("project", flat=True)) == [
        own.pk
    ]
    assert not get_user_model().objects.filter(username="erin").exists()


def test_a_new_link_replaces_the_old_one_until_a_password_is_set(manager_client, project):
    first = account_create_for_project(project=project, username="bob")
    membership = first.membership
    response = manager_client.post(settings_url(project), {"action": "relink", "membership": membership.pk})
    assert response.status_code == 302
    second = manager_client.get(settings_url(project)).context["invite"]["url"]
    assert Client().get(first.set_password_path, follow=True).context["validlink"] is False
    assert set_password(Client(), urlsplit(second).path).redirect_chain[-1][0] == reverse("login")
    with pytest.raises(ValidationError, match="has set a password already"):
        account_link_renew(project=project, user=get_user_model().objects.get(username="bob"))


def test_no_new_link_for_an_account_that_opens_other_projects(project):
    invite = account_create_for_project(project=project, username="shared")
    MembershipFactory(project=ProjectFactory(), user=invite.membership.user)
    with pytest.raises(ValidationError, match="belongs to other projects"):
        account_link_renew(project=project, user=invite.membership.user)
