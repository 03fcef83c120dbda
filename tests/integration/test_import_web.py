"""The web import: upload → preview with the detected format → confirm → worker → result page."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from annotation.models import ImportJob, Item, Judgment
from annotation.services.import_jobs import import_job_run
from annotation.tasks import import_run
from jobs.models import JobState
from tests.unit.import_samples import jsonl_bytes, png_bytes, trl_rows, write_zip

pytestmark = pytest.mark.django_db


def upload(client, project, name: str, data: bytes):
    url = reverse("import-upload", args=[project.pk])
    return client.post(url, {"file": SimpleUploadedFile(name, data)})


def detail_url(job):
    return reverse("import-detail", args=[job.project_id, job.pk])


def confirm(client, job, capture):
    with capture(execute=True):
        response = client.post(reverse("import-confirm", args=[job.project_id, job.pk]))
    assert response.status_code == 302
    job.refresh_from_db()
    return job


def test_import_web_flow_previews_then_imports_on_confirm(
    manager_client, project, celery_eager, django_capture_on_commit_callbacks
):
    page = manager_client.get(reverse("import-upload", args=[project.pk]))
    assert page.status_code == 200 and 'enctype="multipart/form-data"' in page.content.decode()
    rows = trl_rows(7)
    rows[0]["prompt"] = "<script>alert(1)</script> What is 0 + 0?"
    response = upload(manager_client, project, "prefs.jsonl", jsonl_bytes(rows))
    job = ImportJob.objects.get(project=project)
    assert response.status_code == 302 and response.url == detail_url(job)
    assert job.state == JobState.QUEUED and job.rows_total == 7

    page = manager_client.get(detail_url(job)).content.decode()
    assert "TRL preference, standard, explicit prompt (JSONL)" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; What is 0 + 0?" in page and "<script>alert(1)" not in page
    assert "What is 4 + 4?" in page and "What is 5 + 5?" not in page  # the first 5 rows only
    assert 'id="confirm-import"' in page and "Import all 7 rows" in page
    assert "response 1 vs response 2: the file prefers response 1" in page  # tasks in words
    assert not Item.objects.exists()

    job = confirm(manager_client, job, django_capture_on_commit_callbacks)
    assert job.state == JobState.SUCCEEDED
    assert job.report["counts"] == {"items": 7, "candidates": 14, "tasks": 7, "judgments": 7, "images": 0}
    assert Item.objects.filter(project=project, source="prefs.jsonl").count() == 7
    assert Judgment.objects.filter(task__project=project, source="imported").count() == 7

    fragment = manager_client.get(detail_url(job), headers={"HX-Request": "true"})
    assert fragment.status_code == 286  # htmx stops polling
    assert "Imported 7 items, 14 candidates, 7 tasks and 7 judgments" in fragment.content.decode()
    assert "hx-trigger" not in fragment.content.decode()
    assert "Imported 7 items" in manager_client.get(detail_url(job)).content.decode()


def test_import_web_shows_every_bad_row_and_imports_nothing(
    manager_client, project, celery_eager, django_capture_on_commit_callbacks
):
    rows = [*trl_rows(8), {"prompt": "q", "chosen": "a", "rejected": 7}]
    upload(manager_client, project, "bad.jsonl", jsonl_bytes(rows))
    job = confirm(manager_client, ImportJob.objects.get(), django_capture_on_commit_callbacks)
    assert job.state == JobState.FAILED
    assert job.report["errors"] == [
        {"line": 9, "field": "rejected", "reason": "expected a string, got a number"}
    ]
    page = manager_client.get(detail_url(job)).content.decode()
    assert "Nothing was imported: 1 problem" in page
    assert "<td>9</td><td><code>rejected</code></td><td>expected a string, got a number</td>" in page
    assert not Item.objects.exists()


def test_import_web_zip_with_images(
    manager_client, manager, celery_eager, django_capture_on_commit_callbacks, tmp_path
):
    from tests.factories import MembershipFactory, ProjectFactory

    project = ProjectFactory(task_type="image_pair")
    MembershipFactory(project=project, user=manager, role="manager")
    rows = [{"caption": "cats", "jpg_0": "img/a.png", "jpg_1": "img/b.png", "label_0": 0.5}]
    archive = write_zip(
        tmp_path / "p.zip",
        "p.jsonl",
        jsonl_bytes(rows),
        {"img/a.png": png_bytes(), "img/b.png": png_bytes((0, 9, 0))},
    )
    upload(manager_client, project, "pick.zip", archive.read_bytes())
    job = ImportJob.objects.get()
    assert "Pick-a-Pic image pairs (JSONL in zip)" in manager_client.get(detail_url(job)).content.decode()
    job = confirm(manager_client, job, django_capture_on_commit_callbacks)
    assert job.state == JobState.SUCCEEDED, job.report
    assert Judgment.objects.get().choice == "tie"


def test_import_web_progress_fragment_keeps_polling_while_running(manager_client, project):
    upload(manager_client, project, "prefs.jsonl", jsonl_bytes(trl_rows(3)))
    job = ImportJob.objects.get()
    ImportJob.objects.filter(pk=job.pk).update(
        state=JobState.RUNNING, rows_done=2, report={**job.report, "stage": "validating"}
    )
    fragment = manager_client.get(detail_url(job), headers={"HX-Request": "true"})
    body = fragment.content.decode()
    assert fragment.status_code == 200
    assert 'hx-trigger="every 1s"' in body and "validating row 2 of 3" in body
    assert 'style="width: 67%"' in body


def test_import_task_duplicate_delivery_does_nothing(
    manager_client, project, django_capture_on_commit_callbacks
):
    upload(manager_client, project, "prefs.jsonl", jsonl_bytes(trl_rows(4)))
    job = ImportJob.objects.get()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        manager_client.post(reverse("import-confirm", args=[project.pk, job.pk]))
    assert len(callbacks) == 1
    import_run.apply(args=[job.pk])
    import_run.apply(args=[job.pk])
    import_job_run(import_id=job.pk)
    assert Item.objects.filter(project=project).count() == 4
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED and job.rows_done == 4


def test_import_task_ignores_a_job_that_was_never_confirmed(manager_client, project):
    upload(manager_client, project, "prefs.jsonl", jsonl_bytes(trl_rows(2)))
    job = ImportJob.objects.get()
    import_job_run(import_id=job.pk)
    job.refresh_from_db()
    assert job.state == JobState.QUEUED and not Item.objects.exists()


def test_import_web_confirming_twice_queues_once(manager_client, project, django_capture_on_commit_callbacks):
    upload(manager_client, project, "prefs.jsonl", jsonl_bytes(trl_rows(2)))
    job = ImportJob.objects.get()
    url = reverse("import-confirm", args=[project.pk, job.pk])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        manager_client.post(url)
        response = manager_client.post(url, follow=True)
    assert len(callbacks) == 1
    assert "This import was already confirmed." in response.content.decode()


def test_import_upload_is_forbidden_to_annotators(annotator_client, project):
    url = reverse("import-upload", args=[project.pk])
    assert annotator_client.get(url).status_code == 403
    assert upload(annotator_client, project, "prefs.jsonl", jsonl_bytes(trl_rows(1))).status_code == 403
    assert not ImportJob.objects.exists()


def test_import_upload_refuses_a_file_over_the_size_limit(manager_client, project, settings):
    settings.UPLOAD_MAX_BYTES = 100
    response = upload(manager_client, project, "prefs.jsonl", jsonl_bytes(trl_rows(10)))
    assert response.status_code == 400
    assert "larger than the upload limit of 100\xa0bytes" in response.content.decode()
    assert not ImportJob.objects.exists()


def test_import_upload_refuses_other_file_types_and_unknown_columns(manager_client, project, settings):
    response = upload(manager_client, project, "prefs.txt", b"hello")
    assert response.status_code == 400
    assert (
        "Unsupported file type: upload one of .jsonl, .json, .csv, .parquet, .zip."
        in response.content.decode()
    )
    response = upload(manager_client, project, "odd.jsonl", json.dumps({"question": "q"}).encode())
    assert response.status_code == 400
    assert "Cannot tell the format from the columns (question)" in response.content.decode()
    assert not ImportJob.objects.exists()
    assert not list((settings.MEDIA_ROOT / "imports").glob("*"))


def test_import_upload_page_refuses_a_task_type_mismatch(manager_client, project):
    rows = [{"caption": "c", "jpg_0": "a.png", "jpg_1": "b.png", "label_0": 1}]
    response = upload(manager_client, project, "pick.jsonl", jsonl_bytes(rows))
    assert response.status_code == 400
    body = response.content.decode()
    assert "Pick-a-Pic image pairs rows, which need a project of type image_pair" in body
    assert "has type pairwise." in body


def test_import_upload_of_a_corrupt_parquet_file_shows_a_message(manager_client, project):
    response = upload(manager_client, project, "broken.parquet", b"PAR1 this is not really parquet")
    assert response.status_code == 400
    assert "Cannot read the Parquet file" in response.content.decode()
    assert not ImportJob.objects.exists()


def test_import_preview_lists_problems_in_the_first_rows(manager_client, project):
    rows = [trl_rows(1)[0], {"prompt": "q", "chosen": "", "rejected": "b"}]
    upload(manager_client, project, "prefs.jsonl", jsonl_bytes(rows))
    page = manager_client.get(detail_url(ImportJob.objects.get())).content.decode()
    assert "These first rows already have problems" in page
    assert "<td>2</td><td><code>chosen</code></td><td>is an empty string</td>" in page
    assert '<button type="submit" id="confirm-import" disabled' in page  # a failing file cannot be confirmed


def _confirmed(client, project, capture, rows: int = 4) -> ImportJob:
    upload(client, project, "prefs.jsonl", jsonl_bytes(trl_rows(rows)))
    job = ImportJob.objects.get()
    with capture(execute=False):
        client.post(reverse("import-confirm", args=[project.pk, job.pk]))
    return job


def test_an_import_whose_worker_died_is_requeued_with_its_preview_and_imports_once(
    manager_client, project, monkeypatch, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    from annotation.services import import_write
    from annotation.services.import_jobs import IMPORT_JOBS
    from tests.job_support import requeue_stale

    job = _confirmed(manager_client, project, django_capture_on_commit_callbacks)
    preview = job.report["preview"]

    def worker_killed(*args, **kwargs):
        raise SystemExit("worker killed")  # mid-write: the transaction rolls back, nothing records it

    real_chunk = import_write._write_chunk
    monkeypatch.setattr(import_write, "_write_chunk", worker_killed)
    with pytest.raises(SystemExit):
        import_job_run(import_id=job.pk)
    job.refresh_from_db()
    assert job.state == JobState.RUNNING and job.report["stage"] == "writing"
    assert not Item.objects.exists()

    ImportJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=False) as sent:
        assert requeue_stale(IMPORT_JOBS) == [job.pk]
    assert len(sent) == 1
    job.refresh_from_db()
    assert job.state == JobState.QUEUED and job.report["stage"] == "queued"
    assert job.report["preview"] == preview and job.report["format"]
    page = manager_client.get(detail_url(job)).content.decode()
    assert "queued again: the worker of attempt 1 stopped reporting" in page

    monkeypatch.setattr(import_write, "_write_chunk", real_chunk)
    import_job_run(import_id=job.pk)
    job.refresh_from_db()
    assert (job.state, job.attempts, job.rows_done) == (JobState.SUCCEEDED, 2, 4)
    assert Item.objects.filter(project=project).count() == 4


def test_an_import_taken_over_before_it_commits_keeps_no_rows(
    manager_client, project, monkeypatch, django_capture_on_commit_callbacks
):
    from django.db.models import F

    from annotation.services import import_write

    job = _confirmed(manager_client, project, django_capture_on_commit_callbacks)
    real_chunk = import_write._write_chunk

    def write_then_lose_the_lease(*args, **kwargs):
        counts = real_chunk(*args, **kwargs)
        # another worker took the job over (on this connection the rollback undoes it too)
        ImportJob.objects.filter(pk=job.pk).update(attempts=F("attempts") + 1)
        return counts

    monkeypatch.setattr(import_write, "_write_chunk", write_then_lose_the_lease)
    import_job_run(import_id=job.pk)
    job.refresh_from_db()
    assert not Item.objects.exists()
    assert (job.state, job.report["stage"], job.finished_at) == (JobState.RUNNING, "writing", None)


def test_an_import_whose_worker_dies_right_after_the_commit_is_done_not_requeued(
    manager_client, project, monkeypatch, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    from annotation.services import imports
    from annotation.services.import_jobs import IMPORT_JOBS
    from tests.job_support import requeue_stale

    job = _confirmed(manager_client, project, django_capture_on_commit_callbacks)
    real_write = imports.rows_write

    def commit_then_die(**kwargs):
        real_write(**kwargs)
        raise SystemExit("worker killed just after the rows committed")

    monkeypatch.setattr(imports, "rows_write", commit_then_die)
    with pytest.raises(SystemExit):
        import_job_run(import_id=job.pk)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED and job.report["stage"] == "done"
    assert job.report["counts"]["items"] == 4
    ImportJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert requeue_stale(IMPORT_JOBS) == []
    assert Item.objects.filter(project=project).count() == 4


def test_an_import_stale_too_often_fails_with_its_stage_done(
    manager_client, project, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    from annotation.services.import_jobs import IMPORT_JOBS
    from tests.job_support import requeue_stale

    job = _confirmed(manager_client, project, django_capture_on_commit_callbacks)
    ImportJob.objects.filter(pk=job.pk).update(
        state=JobState.RUNNING, attempts=3, heartbeat_at=timezone.now() - timedelta(hours=1)
    )
    with django_capture_on_commit_callbacks(execute=False) as sent:
        assert requeue_stale(IMPORT_JOBS) == []
    job.refresh_from_db()
    assert job.state == JobState.FAILED and not sent
    assert job.report["stage"] == "done" and job.report["preview"] and job.finished_at
    assert "stopped reporting 3 times; nothing was imported" in job.error
    page = manager_client.get(detail_url(job)).content.decode()
    assert "stopped reporting 3 times" in page


def test_only_confirmed_imports_whose_message_was_lost_are_sent_again(
    manager_client, project, celery_eager, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    from annotation.services.import_jobs import IMPORT_JOBS
    from tests.job_support import requeue_stale

    job = _confirmed(manager_client, project, django_capture_on_commit_callbacks)
    upload(manager_client, project, "later.jsonl", jsonl_bytes(trl_rows(2)))
    previewed = ImportJob.objects.exclude(pk=job.pk).get()
    hour_ago = timezone.now() - timedelta(hours=1)
    ImportJob.objects.update(created_at=hour_ago)
    with django_capture_on_commit_callbacks(execute=False) as sent:
        requeue_stale(IMPORT_JOBS)
    assert not sent  # the confirmed one was sent at confirmation; the previewed one waits for its manager
    ImportJob.objects.filter(pk=job.pk).update(heartbeat_at=hour_ago)
    with django_capture_on_commit_callbacks(execute=True) as sent:
        requeue_stale(IMPORT_JOBS)
    assert len(sent) == 1
    job.refresh_from_db()
    previewed.refresh_from_db()
    assert job.state == JobState.SUCCEEDED  # the resent task ran (eager) and imported it
    assert previewed.state == JobState.QUEUED and previewed.report["stage"] == "preview"


def _thumbnails(html: str) -> list[tuple[str, tuple[int, int, int], tuple[int, int]]]:
    """``(alt, mean colour, size)`` of each ``data:`` image on the page."""
    import base64
    import io
    import re

    from PIL import Image, ImageStat

    found = []
    for src, alt in re.findall(r'<img src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)" alt="([^"]+)"', html):
        with Image.open(io.BytesIO(base64.b64decode(src))) as image:
            mean = tuple(round(v) for v in ImageStat.Stat(image.convert("RGB")).mean)
            found.append((alt, mean, image.size))
    return found


def test_the_preview_shows_thumbnails_of_a_pick_a_pic_rows_images_before_the_import(
    manager_client, manager, tmp_path
):
    from tests.factories import MembershipFactory, ProjectFactory

    project = ProjectFactory(task_type="image_pair")
    MembershipFactory(project=project, user=manager, role="manager")
    rows = [{"caption": "cats", "jpg_0": "img/a.png", "jpg_1": "img/b.png", "label_0": 1}]
    files = {"img/a.png": png_bytes((250, 0, 0), size=(400, 200)), "img/b.png": png_bytes((0, 250, 0))}
    archive = write_zip(tmp_path / "p.zip", "p.jsonl", jsonl_bytes(rows), files)
    upload(manager_client, project, "pick.zip", archive.read_bytes())
    html = manager_client.get(detail_url(ImportJob.objects.get())).content.decode()
    (alt_a, red, size_a), (alt_b, green, _) = _thumbnails(html)
    assert (alt_a, alt_b) == ("response 1 of line 1", "response 2 of line 1")
    assert red[0] > 200 > max(red[1:]) and green[1] > 200 > max(green[0], green[2])
    assert size_a == (160, 80)  # at most 160 px, the aspect kept
    assert "[image 400×200 PNG" in html  # the size and format still said in words
    assert not Item.objects.exists()  # nothing stored before the confirmation


def test_the_preview_shows_thumbnails_of_a_multi_image_prompts_images(manager_client, manager, tmp_path):
    from tests.factories import MembershipFactory, ProjectFactory

    project = ProjectFactory(task_type="multi_image")
    MembershipFactory(project=project, user=manager, role="manager")
    rows = [
        {"images": ["one.png", "two.png"], "prompt": "Brighter?", "chosen": "Second.", "rejected": "First."}
    ]
    files = {"one.png": png_bytes((10, 10, 10)), "two.png": png_bytes((250, 250, 250))}
    archive = write_zip(tmp_path / "m.zip", "rows.jsonl", jsonl_bytes(rows), files)
    upload(manager_client, project, "multi.zip", archive.read_bytes())
    html = manager_client.get(detail_url(ImportJob.objects.get())).content.decode()
    thumbs = _thumbnails(html)
    assert [alt for alt, _, _ in thumbs] == ["image 1 of line 1", "image 2 of line 1"]
    assert thumbs[0][1][0] < 40 and thumbs[1][1][0] > 220
    assert "image 2: 8×6 PNG" in html and "Second." in html
