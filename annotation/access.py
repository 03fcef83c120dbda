"""Per-project role checks shared by the views and the API."""

from functools import wraps

from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import get_object_or_404

from .models import Project, Role
from .selectors import member_role_subquery


def project_for(*, user, project_id: int, manager: bool = False) -> tuple[Project, str]:
    """Fetch a project the user belongs to; 404 for outsiders, 403 for annotators on manager actions."""
    project = get_object_or_404(
        Project.objects.annotate(member_role=member_role_subquery(user=user)), pk=project_id
    )
    role = Role.MANAGER if user.is_superuser else project.member_role  # as project_role, in the same query
    if role is None:
        raise Http404("No such project.")
    if manager and role != Role.MANAGER:
        raise PermissionDenied("Only a project manager can do this.")
    return project, role


def project_member_required(*, manager: bool = False):
    """View decorator: resolves ``project_id`` to ``request.project`` and ``request.project_role``."""

    def decorator(view):
        @wraps(view)
        def wrapped(request, project_id, *args, **kwargs):
            request.project, request.project_role = project_for(
                user=request.user, project_id=project_id, manager=manager
            )
            return view(request, project_id, *args, **kwargs)

        return wrapped

    return decorator
