"""``manage.py export_dataset VERSION_ID --format jsonl|parquet --output FILE [--split train|test|all]``."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotation.models import DatasetVersion
from annotation.services.exports import FORMATS, SPLITS, export_write


class Command(BaseCommand):
    help = "Export a frozen dataset version as TRL preference JSONL (a .zip for image projects) or Parquet."

    def add_arguments(self, parser):
        parser.add_argument("version_id", type=int)
        parser.add_argument("--format", dest="fmt", choices=FORMATS, required=True)
        parser.add_argument("--output", required=True, help="File to write.")
        parser.add_argument("--split", choices=SPLITS, default="all", help="default all, with a split column")

    def handle(self, *args, version_id, fmt, output, split, **options):
        version = DatasetVersion.objects.select_related("project").filter(pk=version_id).first()
        if version is None:
            raise CommandError(f"No dataset version with id {version_id}.")
        path = Path(output)
        if not path.parent.is_dir():
            raise CommandError(f"The folder {path.parent} does not exist.")
        tmp = path.with_name(path.name + ".partial")
        try:
            with tmp.open("wb") as out:
                result = export_write(version=version, fmt=fmt, split=split, out=out)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        if result.filename.endswith(".zip") and path.suffix != ".zip":
            self.stderr.write("Note: an image project's JSONL export is a zip (data.jsonl + images/).")
        self.stdout.write(f"{path} {result.rows} rows")
