from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from ..access import project_member_required
from ..forms import AccountCreateForm, MemberForm, ProjectForm, ProjectSettingsForm, add_validation_error
from ..models import Role
from ..rendering import markdown_to_safe_html
from ..selectors import project_overview
from ..services.accounts import account_create_for_project, account_link_renew
from ..services.progress import project_progress_refresh
from ..services.projects import project_create as project_create_service
from ..services.projects import project_member_remove, project_member_set


@require_http_methods(["GET", "POST"])
def project_create(request):
    if not request.user.is_staff:
        raise PermissionDenied("Only staff users can create projects.")
    form = ProjectForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        project = project_create_service(created_by=request.user, **form.cleaned_data)
        return redirect("project-detail", project_id=project.pk)
    return render(request, "annotation/project_form.html", {"form": form})


@require_GET
@project_member_required()
def project_detail(request, project_id):
    project = request.project
    context = {
        "project": project,
        "role": request.project_role,
        "is_manager": request.project_role == Role.MANAGER,
        "overview": project_overview(project=project),
        "guidelines_html": markdown_to_safe_html(project.guidelines),
        "versions": project.versions.order_by("-number")[:10],
        "imports": project.imports.order_by("-created_at")[:5],
    }
    return render(request, "annotation/project_detail.html", context)


@require_http_methods(["GET", "POST"])
@project_member_required(manager=True)
def project_settings(request, project_id):
    """The settings form, the members, and new accounts; each POST names its ``action``."""
    project = request.project
    forms = {
        "form": ProjectSettingsForm(instance=project),
        "member_form": MemberForm(),
        "account_form": AccountCreateForm(prefix="account"),
    }
    invite = None
    if request.method == "POST":
        handler = SETTINGS_ACTIONS.get(request.POST.get("action"))
        bound = handler(request, project) if handler else None
        if bound is None:  # done (or an unknown action): back to the page, as a GET
            return redirect("project-settings", project_id=project.pk)
        forms.update(bound)
    else:
        invite = request.session.pop(_invite_key(project), None)  # the link is shown once
    context = {"project": project, "members": project.memberships.select_related("user"), "invite": invite}
    return render(request, "annotation/project_settings.html", {**context, **forms})


def _settings_save(request, project) -> dict | None:
    form = ProjectSettingsForm(request.POST, instance=project)
    if not form.is_valid():
        return {"form": form}
    form.save()
    if "overlap" in form.changed_data:  # which tasks are complete, and every count, change
        project_progress_refresh(project=project)
    messages.success(request, "Settings saved.")
    return None


def _member_set(request, project) -> dict | None:
    form = MemberForm(request.POST)
    if not form.is_valid():
        return {"member_form": form}
    project_member_set(project=project, user=form.cleaned_data["user"], role=form.cleaned_data["role"])
    messages.success(request, f"{form.cleaned_data['username']} is now a {form.cleaned_data['role']}.")
    return None


def _member_remove(request, project) -> None:
    membership = _posted_membership(request, project)
    if membership and membership.user != request.user:
        project_member_remove(project=project, user=membership.user)
        messages.success(request, f"{membership.user.username} removed.")


def _account_create(request, project) -> dict | None:
    form = AccountCreateForm(request.POST, prefix="account")
    if form.is_valid():
        try:
            invite = account_create_for_project(project=project, **form.cleaned_data)
        except ValidationError as error:
            add_validation_error(form, error)
        else:
            _invite_keep(request, project, invite, "created")
            return None
    return {"account_form": form}


def _account_relink(request, project) -> None:
    membership = _posted_membership(request, project)
    if membership is None:
        return
    try:
        invite = account_link_renew(project=project, user=membership.user)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        _invite_keep(request, project, invite, "has a new link")


def _invite_keep(request, project, invite, what: str) -> None:
    """Keep the link in the session until the next GET of the page shows it (once)."""
    request.session[_invite_key(project)] = {
        "username": invite.membership.user.username,
        "what": what,
        "role": invite.membership.get_role_display(),
        "url": request.build_absolute_uri(invite.set_password_path),
        "expires": f"{invite.expires_at:%Y-%m-%d %H:%M} UTC",
    }


def _posted_membership(request, project):
    return project.memberships.filter(pk=request.POST.get("membership")).select_related("user").first()


def _invite_key(project) -> str:
    return f"account-invite-{project.pk}"


SETTINGS_ACTIONS = {
    "settings": _settings_save,
    "member": _member_set,
    "remove": _member_remove,
    "account": _account_create,
    "relink": _account_relink,
}
