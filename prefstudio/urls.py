from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from . import views
from .api import api_urls

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("accounts/login/", views.StudioLoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path(
        "accounts/set-password/<uidb64>/<token>/",
        views.AccountSetPasswordView.as_view(),
        name="account-set-password",
    ),
    path("accounts/token/", views.api_token, name="api-token"),
    path("accounts/token/<int:token_id>/revoke/", views.api_token_revoke_view, name="api-token-revoke"),
    path("admin/", admin.site.urls),
    path("api/", api_urls()),
    path("", include("training.urls")),
    path("", include("annotation.urls")),
]
