"""Server-rendered text of the annotation pages and the project page ("Keyboard and screens").

A count is followed by a noun in the right number ("1 item", never "1 items"); an empty project leads
with Import; members have their own card.
"""

import re

import pytest
from django.urls import reverse

from annotation.models import ImportJob
from jobs.models import JobState
from tests.factories import ItemFactory, MembershipFactory, UserFactory, pair_task
from tests.training_support import dataset_version

pytestmark = pytest.mark.django_db
ONE_OF_EACH = {"items": 1, "candidates": 1, "tasks": 1, "judgments": 1, "images": 1}


def text(html: str) -> str:
    """The page as read: tags dropped, white space collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def import_job(project, **fields) -> ImportJob:
    return ImportJob.objects.create(
        project=project, original_name="one.jsonl", file="imports/one.jsonl", **fields
    )


def test_a_finished_import_of_one_row_says_1_item_not_1_items(manager_client, project):
    job = import_job(project, state=JobState.SUCCEEDED, rows_total=1, report={"counts": ONE_OF_EACH})
    page = text(manager_client.get(reverse("import-detail", args=[project.pk, job.pk])).content.decode())
    assert "Imported 1 item, 1 candidate, 1 task and 1 judgment (1 image)." in page
    assert "1 items" not in page and "1 tasks" not in page and "1 judgments" not in page


def test_a_finished_import_of_several_rows_keeps_the_plural(manager_client, project):
    counts = {"items": 2, "candidates": 4, "tasks": 2, "judgments": 0}
    job = import_job(project, state=JobState.SUCCEEDED, rows_total=2, report={"counts": counts})
    page = text(manager_client.get(reverse("import-detail", args=[project.pk, job.pk])).content.decode())
    assert "Imported 2 items, 4 candidates, 2 tasks and 0 judgments." in page


def test_an_import_writing_one_row_says_1_row(manager_client, project):
    job = import_job(project, state=JobState.RUNNING, rows_total=1, report={"stage": "writing"})
    page = text(manager_client.get(reverse("import-detail", args=[project.pk, job.pk])).content.decode())
    assert "· 1 row Status: Running · writing 1 row in one transaction" in page and "1 rows" not in page


def test_the_annotate_page_says_1_judgment_when_one_is_wanted(annotator_client, project):
    pair_task(project)
    page = text(annotator_client.get(reverse("annotate", args=[project.pk])).content.decode())
    assert "0 / 1 judgment · 0" in page and "1 judgments" not in page


def test_the_project_page_says_1_example_for_a_version_of_one_row(manager_client, project):
    dataset_version(project, train=1, test=0, stats={"examples": 1, "train": 1, "test": 0})
    page = text(manager_client.get(reverse("project-detail", args=[project.pk])).content.decode())
    assert "· 1 example ·" in page and "1 examples" not in page


def test_an_empty_project_leads_with_import_for_its_managers(manager_client, project):
    html = manager_client.get(reverse("project-detail", args=[project.pk])).content.decode()
    cta = re.search(
        r'<section class="card highlight empty-project" id="import-cta">(.*?)</section>', html, re.S
    )
    assert cta, "no import call to action on an empty project"
    assert f'href="{reverse("import-upload", args=[project.pk])}"' in cta.group(1)
    assert "no items yet" in text(cta.group(1))
    assert html.index('id="import-cta"') < html.index('id="guidelines"')
    assert 'class="stats"' not in html  # nothing to count yet


def test_an_empty_project_tells_annotators_a_manager_imports(client, project):
    annotator = UserFactory(username="ann")
    MembershipFactory(project=project, user=annotator, role="annotator")
    client.force_login(annotator)
    html = client.get(reverse("project-detail", args=[project.pk])).content.decode()
    assert 'id="import-cta"' in html and "A manager of this project imports the data" in html
    assert reverse("import-upload", args=[project.pk]) not in html


def test_a_project_with_items_shows_its_counts_and_no_import_call(manager_client, project):
    ItemFactory(project=project)
    html = manager_client.get(reverse("project-detail", args=[project.pk])).content.decode()
    assert 'id="import-cta"' not in html and 'class="stats"' in html
    assert f'href="{reverse("import-upload", args=[project.pk])}"' in html  # still in the More menu


def test_members_have_their_own_card(manager_client, project):
    MembershipFactory(project=project, user=UserFactory(username="zoe"), role="annotator")
    html = manager_client.get(reverse("project-detail", args=[project.pk])).content.decode()
    card = re.search(r'<section class="card" id="members">(.*?)</section>', html, re.S)
    assert card, "no members card"
    members = text(card.group(1))
    assert "Members · 2" in members and "manager manager" in members and "zoe annotator" in members
    versions = re.search(r'<section class="card" id="versions">(.*?)</section>', html, re.S)
    assert "zoe" not in versions.group(1)
