from django.db import transaction

from ..models import Membership, Project, Role, TaskType


@transaction.atomic
def project_create(
    *,
    name: str,
    task_type: str = TaskType.PAIRWISE,
    created_by=None,
    overlap: int = 1,
    guidelines: str = "",
    assignment_ttl_minutes: int = 30,
) -> Project:
    """Create a project; its creator becomes its first manager."""
    if task_type not in TaskType.values:
        raise ValueError(f"task_type must be one of {', '.join(TaskType.values)}, not {task_type!r}.")
    project = Project.objects.create(
        name=name,
        task_type=task_type,
        created_by=created_by,
        overlap=overlap,
        guidelines=guidelines,
        assignment_ttl_minutes=assignment_ttl_minutes,
    )
    if created_by is not None:
        Membership.objects.create(project=project, user=created_by, role=Role.MANAGER)
    return project


def project_member_set(*, project: Project, user, role: str) -> Membership:
    """Add a member or change their role."""
    if role not in Role.values:
        raise ValueError(f"role must be one of {', '.join(Role.values)}, not {role!r}.")
    membership, _ = Membership.objects.update_or_create(project=project, user=user, defaults={"role": role})
    return membership


def project_member_remove(*, project: Project, user) -> None:
    Membership.objects.filter(project=project, user=user).delete()
