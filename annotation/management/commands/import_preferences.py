"""``python manage.py import_preferences FILE --project NAME [--create --task-type TYPE [--manager USERNAME]]
[--format NAME]``."""

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.urls import reverse
from tqdm import tqdm

from annotation.importers import FORMAT_NAMES, FileFormatError
from annotation.models import Project, Role, TaskType
from annotation.services.imports import ImportOutcome, preferences_import
from annotation.services.projects import project_create, project_member_set


class Command(BaseCommand):
    help = "Import a preference file (.jsonl, .json, .csv, .parquet or a .zip with images) into a project."

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--project", required=True, help="Project name.")
        parser.add_argument("--create", action="store_true", help="Create the project if it does not exist.")
        parser.add_argument(
            "--task-type", choices=TaskType.values, help="Task type of a project made by --create."
        )
        parser.add_argument(
            "--manager",
            metavar="USERNAME",
            help="Make this user a manager of the project (of the new one with --create), so that the "
            "project opens in the web app.",
        )
        parser.add_argument(
            "--format", choices=FORMAT_NAMES, help="Skip detection and read the file as this format."
        )
        parser.add_argument("--no-progress", action="store_true", help="Do not draw progress bars.")

    def handle(self, *args, **options):
        path: Path = options["file"]
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        project = self._project(options)
        bars = _Bars(self.stderr, disabled=options["no_progress"])
        try:
            outcome = preferences_import(
                project=project,
                path=path,
                forced_format=options["format"],
                images_from_dir=True,
                source_name=path.name,
                progress=bars.validate,
                write_progress=bars.write,
            )
        except FileFormatError as exc:
            raise CommandError(str(exc)) from None
        finally:
            bars.close()
        self.stdout.write(f"Detected format: {outcome.description}")
        if not outcome.ok:
            raise CommandError(_error_report(outcome))
        counts = outcome.counts
        self.stdout.write(
            self.style.SUCCESS(
                f"Imported {counts['items']} items, {counts['candidates']} candidates, "
                f"{counts['judgments']} judgments into project '{project.name}'"
            )
        )

    def _project(self, options) -> Project:
        manager = _user(options["manager"]) if options["manager"] else None
        project = Project.objects.filter(name=options["project"]).first()
        if project is not None:
            if options["task_type"] and options["task_type"] != project.task_type:
                raise CommandError(
                    f"Project '{project.name}' is a {project.task_type} project, not {options['task_type']}."
                )
            if manager is not None:
                project_member_set(project=project, user=manager, role=Role.MANAGER)
                self.stdout.write(f"{manager.get_username()} manages project '{project.name}'.")
            return project
        if not options["create"]:
            raise CommandError(
                f"No project named '{options['project']}' (add --create --task-type TYPE to make it)."
            )
        if not options["task_type"]:
            raise CommandError("--create needs --task-type (one of: " + ", ".join(TaskType.values) + ").")
        project = project_create(name=options["project"], task_type=options["task_type"], created_by=manager)
        if manager is None:
            self.stderr.write(self.style.WARNING(_no_member_warning(project)))
        else:
            self.stdout.write(f"Project '{project.name}' created; {manager.get_username()} manages it.")
        return project


def _user(username: str):
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise CommandError(
            f"No user named '{username}' for --manager (create one: python manage.py createsuperuser)."
        )
    return user


def _no_member_warning(project: Project) -> str:
    settings_page = reverse("project-settings", args=[project.pk])
    admin_page = reverse("admin:annotation_membership_add")
    return (
        f"Project '{project.name}' was created with no members: only superusers can open it in the web app. "
        f"Give it a manager with --manager USERNAME next time; now, a superuser can add one on "
        f"{settings_page} or at {admin_page}."
    )


def _error_report(outcome: ImportOutcome) -> str:
    lines = [f"Nothing was imported: {len(outcome.issues)} problem(s) found."]
    lines += [f"  line {issue.line}: {issue.field}: {issue.reason}" for issue in outcome.issues]
    if outcome.truncated:
        lines.append(f"  (stopped after {len(outcome.issues)} problems; fix these and run again to see more)")
    return "\n".join(lines)


class _Bars:
    """Two tqdm bars on stderr: validating, then writing."""

    def __init__(self, stream, *, disabled: bool):
        self.stream, self.disabled, self.bars = stream, disabled, {}

    def _update(self, name: str, done: int, total: int) -> None:
        bar = self.bars.get(name)
        if bar is None:
            for other in self.bars.values():
                other.close()
            bar = self.bars[name] = tqdm(
                total=total, desc=name, unit="row", file=self.stream, disable=self.disabled, leave=True
            )
        bar.update(done - bar.n)

    def validate(self, done: int, total: int) -> None:
        self._update("validating", done, total)

    def write(self, done: int, total: int) -> None:
        self._update("writing", done, total)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
