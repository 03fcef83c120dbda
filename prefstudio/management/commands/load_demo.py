"""Create the demo users and the demo project (idempotent: a second run keeps everything)."""

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from annotation.models import Project, Role, TaskType
from annotation.services.imports import preferences_import
from annotation.services.projects import project_create, project_member_set

DEMO_FILE = Path(__file__).resolve().parents[2] / "demo" / "pairwise.jsonl"
DEMO_PROJECT = "Demo: helpful and honest answers"
DEMO_PASSWORD = "prefstudio-demo"  # noqa: S105 (printed on purpose: local demo accounts)
DEMO_USERS = {"demo-manager": Role.MANAGER, "demo-annotator": Role.ANNOTATOR}
GUIDELINES = """\
Pick the response a careful expert would rather send.

1. **Correct** beats fluent: a confident wrong answer is worse than a short right one.
2. **Helpful**: answers the question that was asked, with the detail it needs.
3. **Safe and honest**: no invented facts; warns where a mistake could hurt someone.

Use *tie* when both are equally good, *both bad* when neither should be sent.
Keys: `1` left, `2` right, `0` tie, `9` both bad, `Enter` submit, `s` skip.
"""


class Command(BaseCommand):
    help = "Create demo-manager / demo-annotator and a pairwise demo project with real prompts."

    def handle(self, *args, **options):
        users = {name: self._user(name, staff=role == Role.MANAGER) for name, role in DEMO_USERS.items()}
        project = Project.objects.filter(name=DEMO_PROJECT).first()
        if project is None:
            project = self._project(users)
        self.stdout.write(self.style.SUCCESS(f"Demo project: {project.name} ({project.items.count()} items)"))
        for name, role in DEMO_USERS.items():
            self.stdout.write(f"  {role:<10} login: {name:<15} password: {DEMO_PASSWORD}")

    def _user(self, username: str, *, staff: bool):
        user, created = get_user_model().objects.get_or_create(
            username=username, defaults={"is_staff": staff}
        )
        if created:
            user.set_password(DEMO_PASSWORD)
            user.save()
        return user

    @transaction.atomic
    def _project(self, users):
        project = project_create(
            name=DEMO_PROJECT,
            task_type=TaskType.PAIRWISE,
            created_by=users["demo-manager"],
            overlap=2,
            guidelines=GUIDELINES,
        )
        project_member_set(project=project, user=users["demo-annotator"], role=Role.ANNOTATOR)
        outcome = preferences_import(project=project, path=DEMO_FILE, source_name="demo")
        if not outcome.ok:
            raise CommandError(f"The bundled demo file did not import: {outcome.report()}")
        return project
