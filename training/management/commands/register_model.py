"""``manage.py register_model NAME PATH``: add a local Hugging Face folder to the model registry."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from training.services.registry import model_entry_register_local


class Command(BaseCommand):
    help = (
        "Register a local model folder as a base model for training jobs: a Hugging Face folder "
        "(config.json + safetensors) as a causal LM, a diffusers folder (model_index.json or unet/) as a "
        "diffusion model."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="registry name shown in the launch form")
        parser.add_argument(
            "path", help="folder holding config.json, the weights and the tokenizer, or a diffusers folder"
        )

    def handle(self, *args, **opts):
        try:
            entry = model_entry_register_local(name=opts["name"], path=opts["path"])
        except ValidationError as exc:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from exc
        self.stdout.write(
            f"registered model {entry.pk}: {entry.name} ({entry.spec}, {entry.get_kind_display()})"
        )
