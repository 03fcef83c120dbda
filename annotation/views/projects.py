from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from ..access import project_member_required
from ..forms import MemberForm, ProjectForm, ProjectSettingsForm
from ..models import Role
from ..rendering import markdown_to_safe_html
from ..selectors import project_overview
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
    project = request.project
    form = ProjectSettingsForm(instance=project)
    member_form = MemberForm()
    if request.method == "POST" and request.POST.get("action") == "settings":
        form = ProjectSettingsForm(request.POST, instance=project)
        if form.is_valid():
            form.save()
            if "overlap" in form.changed_data:  # which tasks are complete, and every count, change
                project_progress_refresh(project=project)
            messages.success(request, "Settings saved.")
            return redirect("project-settings", project_id=project.pk)
    elif request.method == "POST" and request.POST.get("action") == "member":
        member_form = MemberForm(request.POST)
        if member_form.is_valid():
            project_member_set(
                project=project, user=member_form.cleaned_data["user"], role=member_form.cleaned_data["role"]
            )
            messages.success(
                request,
                f"{member_form.cleaned_data['username']} is now a {member_form.cleaned_data['role']}.",
            )
            return redirect("project-settings", project_id=project.pk)
    elif request.method == "POST" and request.POST.get("action") == "remove":
        membership = (
            project.memberships.filter(pk=request.POST.get("membership")).select_related("user").first()
        )
        if membership and membership.user != request.user:
            project_member_remove(project=project, user=membership.user)
            messages.success(request, f"{membership.user.username} removed.")
        return redirect("project-settings", project_id=project.pk)
    context = {
        "project": project,
        "form": form,
        "member_form": member_form,
        "members": project.memberships.select_related("user"),
    }
    return render(request, "annotation/project_settings.html", context)
