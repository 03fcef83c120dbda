"""``load_demo``'s image-pair project: digits samples through the image generation service, idempotent,
and never the reason ``load_demo`` fails.  A tiny pixel model stands in for the embedded digits model."""

from io import StringIO

import pytest
from django.core.management import call_command

from annotation.models import Candidate, Judgment, Project, Task, TaskType
from jobs.models import JobState
from prefstudio.management.commands import load_demo
from training.engine.diffusion import models as diffusion_models
from training.engine.diffusion.tiny import save_tiny_pixel
from training.models import GenerationJob


@pytest.fixture(autouse=True)
def _one_torch_thread(settings):
    """Jobs here share two cores with other tests: one intra-op thread avoids oversubscription."""
    settings.TRAINING_TORCH_THREADS = 1


@pytest.fixture(scope="module")
def tiny_pixel_folder(tmp_path_factory):
    return save_tiny_pixel(tmp_path_factory.mktemp("models") / "tiny-pixel")


@pytest.fixture
def digits_stand_in(monkeypatch, tiny_pixel_folder):
    """``bundled:digits`` loads the tiny pixel model; nothing is trained."""
    real = diffusion_models.load_diffusion
    specs = []

    def load(spec, **kwargs):
        specs.append(spec)
        return real(f"local:{tiny_pixel_folder}", **kwargs)

    monkeypatch.setattr(diffusion_models, "load_diffusion", load)
    monkeypatch.setattr(load_demo.Command, "_ensure_digits_model", staticmethod(lambda: None))
    return specs


def run_load_demo() -> str:
    out = StringIO()
    call_command("load_demo", stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.mark.django_db
def test_load_demo_adds_an_image_pair_project_of_digit_samples_once(digits_stand_in):
    first = run_load_demo()
    project = Project.objects.get(name=load_demo.DEMO_IMAGE_PROJECT)
    assert project.task_type == TaskType.IMAGE_PAIR
    assert [i.prompt for i in project.items.order_by("id")] == [f"a handwritten {d}" for d in range(8)]
    assert Candidate.objects.filter(item__project=project, asset__isnull=False).count() == 16
    assert Task.objects.filter(project=project).count() == 8
    job = GenerationJob.objects.get(project=project)
    assert job.state == JobState.SUCCEEDED and job.model_spec == "bundled:digits"
    assert digits_stand_in == ["bundled:digits"]
    assert f"{load_demo.DEMO_IMAGE_PROJECT} (8 items)" in first

    assert run_load_demo() == first, "a second load keeps the same data"
    assert GenerationJob.objects.count() == 1 and project.items.count() == 8


@pytest.mark.django_db
def test_load_demo_stands_when_the_digits_model_fails_and_retries_next_time(digits_stand_in, monkeypatch):
    stand_in = diffusion_models.load_diffusion

    def broken(spec, **kwargs):
        raise RuntimeError("digits model still training elsewhere")

    monkeypatch.setattr(diffusion_models, "load_diffusion", broken)
    err = StringIO()
    call_command("load_demo", stdout=StringIO(), stderr=err)
    assert "digits model still training elsewhere" in err.getvalue()
    project = Project.objects.get(name=load_demo.DEMO_IMAGE_PROJECT)
    assert not project.items.exists()
    assert Project.objects.get(name=load_demo.DEMO_PROJECT).items.exists()

    monkeypatch.setattr(diffusion_models, "load_diffusion", stand_in)
    assert f"{load_demo.DEMO_IMAGE_PROJECT} (8 items)" in run_load_demo()


@pytest.mark.django_db
def test_the_text_demo_freezes_as_shipped_into_train_and_held_out_rows(digits_stand_in):
    from annotation.services.versions import FreezeRule, dataset_version_freeze, freeze_preview

    run_load_demo()
    project = Project.objects.get(name=load_demo.DEMO_PROJECT)
    preview = freeze_preview(project=project, rule=FreezeRule())
    # three items ship as held out, and the default 10% of the other nine adds one
    assert (preview.train, preview.test) == (8, 4) and not preview.dropped
    version = dataset_version_freeze(project=project, rule=FreezeRule())
    assert (version.stats["train"], version.stats["test"]) == (8, 4)
    rows = {e.row["prompt"]: e.row for e in version.examples.all()}
    seasons = rows["What causes the seasons on Earth?"]
    assert seasons["chosen"].startswith("Earth's axis is tilted")  # the reference vote picks the careful one
    from django.contrib.auth import get_user_model

    from annotation.services.assignments import assignment_take_next

    annotator = get_user_model().objects.get(username="demo-annotator")
    assert assignment_take_next(project=project, annotator=annotator) is not None  # still theirs to judge
    run_load_demo()  # a second run adds no second reference vote
    assert project.items.count() == 12 and Judgment.objects.filter(task__project=project).count() == 12
