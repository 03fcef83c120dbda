"""Pages name models, never server paths: a spec shows as its registry entry's name (``model_label``), in
the compare page's config differences and on generation pages."""

import pytest

from annotation.models import Project
from tests.training_support import dataset_version, tiny_model_entry, tiny_params
from training.models import GenerationJob, GenerationKind, Location, ModelEntry
from training.services.jobs import training_job_launch
from training.services.rlhf import model_label, model_labels_in


@pytest.mark.django_db
def test_model_label_names_the_entry_and_hides_an_unregistered_folder(tmp_path):
    entry = ModelEntry.objects.create(name="job-2-dpo", location=Location.JOB, path=str(tmp_path / "final"))
    assert model_label(f"local:{entry.path}") == "job-2-dpo"
    assert model_label("bundled:smollm2-135m-instruct") == "bundled:smollm2-135m-instruct"
    assert model_label("local:/srv/secret/checkpoint-4") == "an unregistered local model"
    labelled = model_labels_in({"model": f"local:{entry.path}", "reference_model": None, "beta": 0.1})
    assert labelled == {"model": "job-2-dpo", "reference_model": None, "beta": 0.1}


@pytest.mark.django_db
def test_compare_and_generation_pages_show_model_names_not_paths(tmp_path, project, manager, manager_client):
    first, second = tiny_model_entry(tmp_path / "one"), tiny_model_entry(tmp_path / "two", name="tiny-two")
    version = dataset_version(project)
    jobs = [
        training_job_launch(
            params=tiny_params(tmp_path / str(i)),
            base_model=base,
            dataset_version=version,
            created_by=manager,
        )
        for i, base in enumerate((first, second))
    ]
    page = manager_client.get(f"/projects/{project.pk}/jobs/compare/?jobs={jobs[0].pk}&jobs={jobs[1].pk}")
    html = page.content.decode()
    rows = {row["field"]: row["cells"] for row in page.context["diff_rows"]}
    assert sorted(rows["model"]) == ["tiny-llama", "tiny-two"] and str(tmp_path) not in html
    job = GenerationJob.objects.create(
        project=Project.objects.get(pk=project.pk),
        kind=GenerationKind.CANDIDATES,
        model=second,
        model_spec=second.spec,
        options={"k": 2, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 4, "seed": 0},
        created_by=manager,
    )
    for url in (f"/projects/{project.pk}/generate/", f"/projects/{project.pk}/generate/{job.pk}/"):
        html = manager_client.get(url).content.decode()
        assert "tiny-two" in html and str(tmp_path) not in html, url
