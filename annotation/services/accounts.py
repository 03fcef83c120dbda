"""Accounts a manager makes for their project: a user with no password yet, a membership, and a one-time
link on which the new member sets their password (``prefstudio.views.AccountSetPasswordView``)."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.tokens import PasswordResetTokenGenerator
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from ..models import Membership, Project, Role
from .projects import project_member_set


class AccountLinkTokenGenerator(PasswordResetTokenGenerator):
    """Django's password-reset token under its own salt: a reset token is no set-password link, nor the
    reverse. The token hashes the password and the last login, so it stops working once the password is
    set; it expires after ``PASSWORD_RESET_TIMEOUT`` seconds (settings: ``ACCOUNT_LINK_DAYS``)."""

    key_salt = "annotation.services.accounts.AccountLinkTokenGenerator"


account_link_tokens = AccountLinkTokenGenerator()


@dataclass(frozen=True)
class AccountInvite:
    membership: Membership
    set_password_path: str  # the one-time link, without scheme and host
    expires_at: datetime  # when the link stops working if unused


def account_create_for_project(
    *, project: Project, username: str, email: str = "", role: str = Role.ANNOTATOR
) -> AccountInvite:
    """Create a user with an unusable password, add them to the project, and make their one-time link.

    Raises ``ValidationError`` keyed by field (``username``, ``email``, ``role``).
    """
    username, email = username.strip(), email.strip()
    _validate_new_account(username=username, email=email, role=role)
    with transaction.atomic():
        user = get_user_model()(username=username, email=email)
        user.set_unusable_password()
        user.save()
        membership = project_member_set(project=project, user=user, role=role)
    return _invite(membership=membership, user=user)


def _invite(*, membership: Membership, user) -> AccountInvite:
    return AccountInvite(
        membership=membership,
        set_password_path=account_set_password_path(user=user),
        expires_at=timezone.now() + timedelta(seconds=settings.PASSWORD_RESET_TIMEOUT),
    )


def account_link_renew(*, project: Project, user) -> AccountInvite:
    """A new one-time link for a member who has not set a password yet; earlier links stop working.

    Only for an account that belongs to this project alone and is not staff: a manager must not gain,
    through a link, an account that opens other projects. Raises ``ValidationError`` otherwise.
    """
    memberships = list(Membership.objects.filter(user=user))
    if user.has_usable_password() or user.is_staff or user.is_superuser:
        raise ValidationError(f"{user.username} has set a password already: they log in with it.")
    if [m.project_id for m in memberships] != [project.pk]:
        raise ValidationError(f"{user.username} belongs to other projects: an administrator can renew it.")
    user.set_unusable_password()  # a new random hash: the tokens made from the old one fail
    user.save(update_fields=["password"])
    return _invite(membership=memberships[0], user=user)


def account_set_password_path(*, user) -> str:
    """The one-time set-password link for a user (valid until used or ``PASSWORD_RESET_TIMEOUT``)."""
    uidb64 = urlsafe_base64_encode(force_bytes(user.pk))
    token = account_link_tokens.make_token(user)
    return reverse("account-set-password", kwargs={"uidb64": uidb64, "token": token})


def _validate_new_account(*, username: str, email: str, role: str) -> None:
    user_model = get_user_model()
    errors: dict[str, list[str]] = {}
    username_field = user_model._meta.get_field(user_model.USERNAME_FIELD)
    try:
        username_field.clean(username, None)  # required, max length, Django's username characters
    except ValidationError as exc:
        errors["username"] = exc.messages
    else:
        if user_model.objects.filter(username__iexact=username).exists():
            errors["username"] = [f"A user named {username!r} already exists."]
    if email:
        try:
            validate_email(email)
        except ValidationError as exc:
            errors["email"] = exc.messages
    if role not in Role.values:
        errors["role"] = [f"role must be one of {', '.join(Role.values)}, not {role!r}."]
    if errors:
        raise ValidationError(errors)
