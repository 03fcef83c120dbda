from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.views import LoginView, PasswordResetConfirmView
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.urls import reverse_lazy
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from annotation.selectors import projects_for_user
from annotation.services.accounts import account_link_tokens

from .services import api_token_create, api_token_revoke


@require_GET
def home(request):
    projects = projects_for_user(user=request.user)
    return render(request, "home.html", {"projects": projects})


@login_not_required
@require_GET
def healthz(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"ok": True})


TOKEN_LIFETIMES = {"30": 30, "90": 90, "365": 365}  # days, as the token form offers them


@require_http_methods(["GET", "POST"])
def api_token(request):
    raw = None
    if request.method == "POST":
        days = TOKEN_LIFETIMES.get(request.POST.get("expires_in_days", ""), 90)
        raw = api_token_create(
            user=request.user,
            name=request.POST.get("name") or "default",
            expires_at=timezone.now() + timedelta(days=days),
        )
    tokens = request.user.api_tokens.order_by("-created_at")
    context = {"raw_token": raw, "tokens": tokens, "now": timezone.now(), "lifetimes": TOKEN_LIFETIMES}
    return render(request, "api_token.html", context)


@require_POST
def api_token_revoke_view(request, token_id):
    if api_token_revoke(user=request.user, token_id=token_id):
        messages.success(request, "Token revoked: it is refused from now on.")
    return redirect("api-token")


@login_not_required
@require_GET
def favicon(request):
    """Browsers ask for /favicon.ico whatever the page links: send them to the icon."""
    return redirect(static("favicon.svg"), permanent=True)


class StudioLoginView(LoginView):
    """The login form, naming the demo accounts when ``load_demo`` made them (and, in DEBUG, their
    password, which ``make run`` prints anyway)."""

    def get_context_data(self, **kwargs):
        from .management.commands.load_demo import DEMO_PASSWORD, DEMO_USERS

        context = super().get_context_data(**kwargs)
        names = sorted(
            get_user_model().objects.filter(username__in=DEMO_USERS).values_list("username", flat=True)
        )
        context["demo_users"] = names
        context["demo_password"] = DEMO_PASSWORD if names and settings.DEBUG else ""
        return context


class AccountSetPasswordView(PasswordResetConfirmView):
    """The one-time link of an account a manager made: the new member chooses a password, then logs in.

    Django's reset-confirm view (``login_not_required``; it moves the token from the URL into the session
    before showing the form), with the accounts' own token generator. The token is an HMAC under
    SECRET_KEY, so the link cannot be guessed; passwords are then tried on the login form, which axes
    throttles.
    """

    template_name = "registration/set_password.html"
    token_generator = account_link_tokens
    success_url = reverse_lazy("login")

    def form_valid(self, form):
        response = super().form_valid(form)
        messages.success(self.request, f"Password set for {form.user.username}: log in with it.")
        return response
