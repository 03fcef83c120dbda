"""``manage.py freeze_dataset --project NAME [--rule "min_votes=2,drop_ties=true"]``.

Prints the new version id on stdout (a summary goes to stderr).
"""

from django.core.management.base import BaseCommand, CommandError

from annotation.models import Project
from annotation.services.versions import FreezeRule, dataset_version_freeze


class Command(BaseCommand):
    help = "Freeze a project's current judgments into a new immutable dataset version; prints its id."

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="Project name (or numeric id).")
        parser.add_argument(
            "--rule",
            default="",
            help="Comma-separated key=value: min_votes, min_strength, drop_ties, drop_both_bad, "
            "min_agreement.",
        )
        parser.add_argument("--seed", type=int, default=0, help="Seed of the train/test split (default 0).")
        parser.add_argument(
            "--test-fraction", type=float, default=0.1, help="Share of items in test (default 0.1)."
        )

    def handle(self, *args, project, rule, seed, test_fraction, **options):
        found = Project.objects.filter(name=project).first()
        if found is None and project.isdigit():
            found = Project.objects.filter(pk=int(project)).first()
        if found is None:
            raise CommandError(f"No project named {project!r}.")
        try:
            parsed = FreezeRule.parse(rule)
            version = dataset_version_freeze(
                project=found, rule=parsed, seed=seed, test_fraction=test_fraction
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        stats = version.stats
        self.stderr.write(
            f"Froze {found.name} v{version.number}: {stats['examples']} examples "
            f"({stats['train']} train, {stats['test']} test), hash {version.content_hash[:12]}"
        )
        self.stdout.write(str(version.pk))
