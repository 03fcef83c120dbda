from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_http_methods

from annotation.selectors import projects_for_user

from .services import api_token_create


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


@require_http_methods(["GET", "POST"])
def api_token(request):
    raw = None
    if request.method == "POST":
        raw = api_token_create(user=request.user, name=request.POST.get("name") or "default")
    tokens = request.user.api_tokens.order_by("-created_at")
    return render(request, "api_token.html", {"raw_token": raw, "tokens": tokens})
