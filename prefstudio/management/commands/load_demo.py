"""Create the demo users and the demo projects (idempotent: a second run keeps everything).

The text demo ships a reference vote per task and three held-out items, so it freezes with the default
rule into train and held-out rows before anyone annotates.

The image-pair demo holds samples of the embedded digits diffusion model, drawn by the image generation
service in this process (the worker may not be up yet).  The model trains itself into the model cache the
first time (a minute or two, with a progress bar on stderr); if that or the sampling fails, the rest of
the demo stands and the next run tries again.
"""

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from annotation.models import Choice, Judgment, JudgmentSource, Project, Role, Task, TaskType
from annotation.services.imports import preferences_import
from annotation.services.projects import project_create, project_member_set
from jobs.models import JobState
from training.services.image_generation import ImageGenerationSettings, image_generation_run_now

DEMO_FILE = Path(__file__).resolve().parents[2] / "demo" / "pairwise.jsonl"
DEMO_PROJECT = "Demo: helpful and honest answers"
DEMO_PASSWORD = "prefstudio-demo"  # noqa: S105 (printed on purpose: local demo accounts)
DEMO_IMAGE_PROJECT = "Demo: handwritten digits (image pairs)"
DEMO_IMAGE_SETTINGS = ImageGenerationSettings(
    captions=tuple(f"a handwritten {digit}" for digit in range(8)), k=2, steps=25, guidance_scale=3.0, seed=0
)
IMAGE_GUIDELINES = """\
Both images were drawn by the embedded digits model for the caption above.

Pick the image that shows the captioned digit more clearly: the right digit first, then a cleaner stroke.
Use *tie* when they are equally good.  Keys: `1` left, `2` right, `0` tie, `Enter` submit, `s` skip.
"""
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
        images = self._image_project(users)
        self.stdout.write(self.style.SUCCESS(f"Demo project: {images.name} ({images.items.count()} items)"))
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
        self._reference_votes(project)
        return project

    @staticmethod
    def _reference_votes(project) -> None:
        """One imported vote per task for the response the demo file lists first (the careful one, by the
        guidelines), so the demo freezes into train and held-out rows as shipped; the demo users' votes
        join it (three votes: a strict majority unless two of them pick tie or both bad)."""
        tasks = Task.objects.filter(project=project)
        Judgment.objects.bulk_create(
            Judgment(task=task, source=JudgmentSource.IMPORTED, choice=Choice.A) for task in tasks
        )

    def _image_project(self, users):
        """The image-pair demo project, filled with digits samples unless it already holds items."""
        project = Project.objects.filter(name=DEMO_IMAGE_PROJECT).first()
        if project is None:
            with transaction.atomic():
                project = project_create(
                    name=DEMO_IMAGE_PROJECT,
                    task_type=TaskType.IMAGE_PAIR,
                    created_by=users["demo-manager"],
                    guidelines=IMAGE_GUIDELINES,
                )
                project_member_set(project=project, user=users["demo-annotator"], role=Role.ANNOTATOR)
        if not project.items.exists():
            self._digit_samples(project, users["demo-manager"])
        return project

    def _digit_samples(self, project, manager) -> None:
        try:
            self._ensure_digits_model()
            job = image_generation_run_now(project=project, settings=DEMO_IMAGE_SETTINGS, created_by=manager)
        except Exception as error:  # noqa: BLE001 - the text demo must stand without the image one
            job, failure = None, f"{type(error).__name__}: {error}"
        else:
            failure = job.error if job.state != JobState.SUCCEEDED else ""
        if failure:
            self.stderr.write(f"The digits demo images were not generated ({failure}); load_demo retries.")
        elif job is not None:
            self.stderr.write(f"Sampled {job.result['images']} digits images (generation job {job.pk}).")

    @staticmethod
    def _ensure_digits_model() -> None:
        """Train the embedded digits model first, with its progress bar, if the cache lacks it."""
        from training.engine.diffusion.digits import ensure_digits_model

        ensure_digits_model(progress=True)
