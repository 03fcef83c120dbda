import hashlib
import io

import pytest
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from annotation.models import (
    Asset,
    Candidate,
    DatasetExample,
    DatasetVersion,
    FreezeJob,
    Item,
    ItemImage,
    Judgment,
    JudgmentSource,
    Task,
    TaskType,
)
from annotation.services.freeze_jobs import freeze_job_run
from annotation.services.versions import FreezeError, FreezeRule, dataset_version_freeze, freeze_preview
from jobs.models import JobState
from tests.factories import CandidateFactory, ItemFactory, MembershipFactory, ProjectFactory, pair_task


def fast_user(username):
    """A user without a password hash (hashing is the slow part of UserFactory)."""
    return get_user_model().objects.create(username=username)


def imported(task, choice="a", **kwargs):
    return Judgment.objects.create(task=task, source=JudgmentSource.IMPORTED, choice=choice, **kwargs)


def vote(task, user, choice, strength=2):
    return Judgment.objects.create(task=task, annotator=user, choice=choice, strength=strength)


def rows_of(version, split=None):
    examples = version.examples.order_by("index")
    if split:
        examples = examples.filter(split=split)
    return [e.row for e in examples]


def make_asset(color=(255, 0, 0)) -> Asset:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), color).save(buffer, format="PNG")
    data = buffer.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    asset = Asset(sha256=sha, format="PNG", width=4, height=3, size_bytes=len(data))
    asset.file.save(f"{sha}.png", ContentFile(data), save=False)
    asset.save()
    return asset


@pytest.fixture
def raters(db):
    return [fast_user(f"rater{i}") for i in range(3)]


def test_rule_parse_reads_every_key():
    rule = FreezeRule.parse("min_votes=2, min_strength=2,drop_ties=false,drop_both_bad=0,min_agreement=0.6")
    assert rule == FreezeRule(
        min_votes=2, min_strength=2, drop_ties=False, drop_both_bad=False, min_agreement=0.6
    )
    assert FreezeRule.parse("") == FreezeRule()
    assert FreezeRule.parse("min_strength=none").min_strength is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("min_vote=2", "Unknown rule key 'min_vote'"),
        ("min_votes=two", "min_votes must be an integer"),
        ("min_votes=0", "min_votes must be an integer of at least 1"),
        ("min_strength=7", "min_strength must be 1, 2, 3 or none"),
        ("drop_ties=maybe", "drop_ties must be true or false"),
        ("min_agreement=1.5", "min_agreement must be a number from 0 to 1"),
        ("min_votes", "must look like key=value"),
    ],
)
def test_rule_parse_rejects_bad_keys_and_values_with_a_clear_message(text, message):
    with pytest.raises(ValueError, match=message):
        FreezeRule.parse(text)


def test_imported_preferences_freeze_without_annotation(project, manager):
    tasks = [pair_task(project, prompt=f"Prompt {i}", texts=(f"good {i}", f"bad {i}")) for i in range(3)]
    for task in tasks:
        imported(task)
    version = dataset_version_freeze(project=project, rule=FreezeRule(), created_by=manager)
    assert version.number == 1
    assert rows_of(version) == [
        {"prompt": f"Prompt {i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(3)
    ]
    assert version.stats["examples"] == 3
    assert version.stats["votes"] == 3
    assert version.stats["tasks_considered"] == 3
    assert version.stats["train"] + version.stats["test"] == 3
    assert version.conversational is False


def test_freezing_the_same_rows_again_returns_the_version_just_made(project):
    tasks = [pair_task(project, prompt=f"Prompt {i}", texts=(f"good {i}", f"bad {i}")) for i in range(3)]
    for task in tasks[:2]:
        imported(task)
    first = dataset_version_freeze(project=project, rule=FreezeRule())
    assert dataset_version_freeze(project=project, rule=FreezeRule()) == first  # a retried freeze
    assert dataset_version_freeze(project=project, rule=FreezeRule(), test_fraction=0.5).number == 2
    assert dataset_version_freeze(project=project, rule=FreezeRule()).number == 3  # v2 came between
    imported(tasks[2])
    assert dataset_version_freeze(project=project, rule=FreezeRule()).number == 4  # new votes
    assert DatasetVersion.objects.filter(project=project).count() == 4


def test_majority_picks_chosen_and_drops_ties_both_bad_and_split_votes(project, raters):
    won_by_b = pair_task(project, prompt="won by b", texts=("A text", "B text"))
    for user, choice in zip(raters, ["b", "b", "a"], strict=True):
        vote(won_by_b, user, choice)
    tie = pair_task(project, prompt="tie")
    vote(tie, raters[0], "tie")
    both_bad = pair_task(project, prompt="both bad")
    vote(both_bad, raters[0], "both_bad")
    split_votes = pair_task(project, prompt="split")
    vote(split_votes, raters[0], "a")
    vote(split_votes, raters[1], "b")
    pair_task(project, prompt="unjudged")
    version = dataset_version_freeze(project=project, rule=FreezeRule())
    assert rows_of(version) == [
        {"prompt": "won by b", "chosen": "B text", "rejected": "A text", "strength": 2.0}
    ]
    assert version.stats["tasks_dropped"] == {"both_bad": 1, "no_majority": 1, "no_votes": 1, "tie": 1}


def test_min_votes_and_min_agreement_drop_thin_majorities(project, raters):
    single = pair_task(project, prompt="single")
    imported(single)
    thin = pair_task(project, prompt="thin")
    for user, choice in zip(raters, ["a", "a", "b"], strict=True):
        vote(thin, user, choice)
    with pytest.raises(FreezeError, match="low_agreement: 1"):
        dataset_version_freeze(project=project, rule=FreezeRule(min_votes=2, min_agreement=0.7))
    version = dataset_version_freeze(project=project, rule=FreezeRule(min_votes=2, min_agreement=0.6))
    assert [r["prompt"] for r in rows_of(version)] == ["thin"]
    assert version.stats["tasks_dropped"] == {"too_few_votes": 1}


def test_min_strength_ignores_weak_human_votes_but_not_imported_ones(project, raters):
    weak = pair_task(project, prompt="weak")
    vote(weak, raters[0], "a", strength=1)
    strong = pair_task(project, prompt="strong")
    vote(strong, raters[0], "b", strength=3)
    vote(strong, raters[1], "a", strength=1)
    imp = pair_task(project, prompt="imported")
    imported(imp)
    version = dataset_version_freeze(project=project, rule=FreezeRule(min_strength=2))
    assert [(r["prompt"], r["chosen"]) for r in rows_of(version)] == [
        ("strong", "Answer B"),
        ("imported", "Answer A"),
    ]
    assert version.stats["tasks_dropped"] == {"below_min_strength": 1}


def test_a_row_carries_the_mean_strength_of_its_winning_votes_and_imported_rows_none(project, raters):
    judged = pair_task(project, prompt="judged")
    vote(judged, raters[0], "b", strength=3)
    vote(judged, raters[1], "b", strength=2)
    vote(judged, raters[2], "a", strength=1)  # a vote for the loser says nothing of the winner's margin
    imp = pair_task(project, prompt="imported")
    imported(imp)
    rows = {r["prompt"]: r for r in rows_of(dataset_version_freeze(project=project, rule=FreezeRule()))}
    assert rows["judged"]["strength"] == 2.5 and rows["judged"]["chosen"] == "Answer B"
    assert "strength" not in rows["imported"]
    strict = dataset_version_freeze(project=project, rule=FreezeRule(min_strength=3))
    assert {r["prompt"]: r.get("strength") for r in rows_of(strict)}["judged"] == 3.0


def test_only_the_newest_judgment_of_a_correction_chain_counts(project, raters):
    task = pair_task(project)
    first = vote(task, raters[0], "a")
    Judgment.objects.create(task=task, annotator=raters[0], choice="b", strength=2, supersedes=first)
    version = dataset_version_freeze(project=project, rule=FreezeRule())
    assert rows_of(version)[0]["chosen"] == "Answer B"
    assert version.stats["votes"] == 1


def test_drop_both_bad_false_lets_the_other_votes_decide(project, raters):
    task = pair_task(project)
    vote(task, raters[0], "both_bad")
    vote(task, raters[1], "both_bad")
    vote(task, raters[2], "a")
    with pytest.raises(FreezeError):
        dataset_version_freeze(project=project, rule=FreezeRule())
    version = dataset_version_freeze(project=project, rule=FreezeRule(drop_both_bad=False))
    assert rows_of(version)[0]["chosen"] == "Answer A"


def test_freezing_with_no_qualifying_rows_is_a_clear_error(project):
    pair_task(project)
    with pytest.raises(FreezeError, match="No task qualifies under this rule"):
        dataset_version_freeze(project=project, rule=FreezeRule())
    assert not DatasetVersion.objects.exists()


def test_split_keeps_item_split_and_is_seeded_per_item(project):
    for i in range(20):
        task = pair_task(project, prompt=f"p{i}")
        imported(task)
    Item.objects.filter(prompt="p3").update(split="test")
    first = dataset_version_freeze(project=project, rule=FreezeRule(), seed=7, test_fraction=0.25)
    again = dataset_version_freeze(project=project, rule=FreezeRule(), seed=7, test_fraction=0.25)
    other = dataset_version_freeze(project=project, rule=FreezeRule(), seed=8, test_fraction=0.25)
    test_prompts = [r["prompt"] for r in rows_of(first, "test")]
    assert "p3" in test_prompts
    assert len(test_prompts) == 1 + round(19 * 0.25)
    assert first.content_hash == again.content_hash
    assert test_prompts == [r["prompt"] for r in rows_of(again, "test")]
    assert first.content_hash != other.content_hash
    assert first.stats["test"] == len(test_prompts)


def test_versions_and_examples_are_immutable(project):
    imported(pair_task(project))
    version = dataset_version_freeze(project=project, rule=FreezeRule())
    version.stats = {}
    with pytest.raises(ValueError, match="immutable"):
        version.save()
    example = DatasetExample.objects.get(version=version)
    with pytest.raises(ValueError, match="immutable"):
        example.save()


def test_conversational_items_make_every_row_conversational(project):
    task = pair_task(project, prompt="plain")
    imported(task)
    item = ItemFactory(project=project, prompt="hi", messages=[{"role": "user", "content": "hi"}])
    chosen = CandidateFactory(
        item=item, position=0, text="hello", messages=[{"role": "assistant", "content": "hello"}]
    )
    rejected = CandidateFactory(item=item, position=1, text="go away")
    imported(Task.objects.create(project=project, item=item, candidate_ids=[chosen.pk, rejected.pk]))
    version = dataset_version_freeze(project=project, rule=FreezeRule())
    assert version.conversational is True
    assert rows_of(version) == [
        {
            "prompt": [{"role": "user", "content": "plain"}],
            "chosen": [{"role": "assistant", "content": "Answer A"}],
            "rejected": [{"role": "assistant", "content": "Answer B"}],
        },
        {
            "prompt": [{"role": "user", "content": "hi"}],
            "chosen": [{"role": "assistant", "content": "hello"}],
            "rejected": [{"role": "assistant", "content": "go away"}],
        },
    ]


def test_ranking_tasks_give_every_better_worse_pair_with_rank_gap(project, raters):
    project.task_type = TaskType.RANKING
    project.save()
    item = ItemFactory(project=project, prompt="rank")
    c = [CandidateFactory(item=item, position=i, text=f"r{i}") for i in range(3)]
    task = Task.objects.create(project=project, item=item, candidate_ids=[x.pk for x in c])
    Judgment.objects.create(task=task, annotator=raters[0], ranking=[[c[2].pk], [c[0].pk, c[1].pk]])
    version = dataset_version_freeze(project=project, rule=FreezeRule())
    rows = rows_of(version)
    assert [(r["chosen"], r["rejected"], r["rank_gap"]) for r in rows] == [("r2", "r0", 1), ("r2", "r1", 1)]
    assert len({e.split for e in version.examples.all()}) == 1


def test_factuality_pairs_responses_by_factual_share(project, raters):
    project.task_type = TaskType.FACTUALITY
    project.save()
    item = ItemFactory(project=project, prompt="facts")
    good = CandidateFactory(item=item, position=0, text="One. Two.", sentences=["One.", "Two."])
    bad = CandidateFactory(item=item, position=1, text="Three. Four.", sentences=["Three.", "Four."])
    for candidate, labels in ((good, [True, True]), (bad, ["factual", "not_factual"])):
        task = Task.objects.create(project=project, item=item, candidate_ids=[candidate.pk])
        Judgment.objects.create(task=task, source=JudgmentSource.IMPORTED, sentence_labels=labels)
    version = dataset_version_freeze(project=project, rule=FreezeRule())
    assert rows_of(version) == [
        {
            "prompt": "facts",
            "chosen": "One. Two.",
            "rejected": "Three. Four.",
            "chosen_sentences": [
                {"text": "One.", "start": 0, "end": 4, "label": "factual"},
                {"text": "Two.", "start": 5, "end": 9, "label": "factual"},
            ],
            "rejected_sentences": [
                {"text": "Three.", "start": 0, "end": 6, "label": "factual"},
                {"text": "Four.", "start": 7, "end": 12, "label": "hallucinated"},
            ],
        }
    ]


def test_stepwise_rows_carry_initial_steps_and_answer(project):
    project.task_type = TaskType.STEPWISE
    project.save()
    task = pair_task(project, prompt="2+2?", texts=("So 4.", "So 5."))
    Item.objects.filter(pk=task.item_id).update(metadata={"initial_reason_steps": "Add.", "answer": "4"})
    imported(task)
    row = rows_of(dataset_version_freeze(project=project, rule=FreezeRule()))[0]
    assert row == {
        "prompt": "2+2?",
        "chosen": "So 4.",
        "rejected": "So 5.",
        "initial_reason_steps": "Add.",
        "answer": "4",
    }


def test_image_pairs_use_pick_a_pic_columns_and_keep_ties_only_when_asked(project, raters):
    project.task_type = TaskType.IMAGE_PAIR
    project.save()
    red, blue = make_asset((255, 0, 0)), make_asset((0, 0, 255))
    for prompt, choice in (("cat", "b"), ("dog", "tie")):
        item = ItemFactory(project=project, prompt=prompt)
        c = [Candidate.objects.create(item=item, position=i, asset=a) for i, a in enumerate((red, blue))]
        imported(Task.objects.create(project=project, item=item, candidate_ids=[x.pk for x in c]), choice)
    names = [f"images/{red.sha256}.png", f"images/{blue.sha256}.png"]
    strict = rows_of(dataset_version_freeze(project=project, rule=FreezeRule()))
    assert strict == [{"caption": "cat", "jpg_0": names[0], "jpg_1": names[1], "label_0": 0.0}]
    loose = rows_of(dataset_version_freeze(project=project, rule=FreezeRule(drop_ties=False)))
    assert [r["label_0"] for r in loose] == [0.0, 0.5]


def test_multi_image_rows_name_their_images_in_order(project):
    project.task_type = TaskType.MULTI_IMAGE
    project.save()
    task = pair_task(project, prompt="compare")
    first, second = make_asset((1, 2, 3)), make_asset((4, 5, 6))
    ItemImage.objects.create(item_id=task.item_id, asset=second, position=0)
    ItemImage.objects.create(item_id=task.item_id, asset=first, position=1)
    imported(task)
    row = rows_of(dataset_version_freeze(project=project, rule=FreezeRule()))[0]
    assert row["images"] == [f"images/{second.sha256}.png", f"images/{first.sha256}.png"]


def test_stats_carry_agreement_and_flip_rate(project, raters):
    for n in range(8):
        task = pair_task(project)
        for user, choice in zip(raters, ["a", "a", "b" if n < 2 else "a"], strict=True):
            vote(task, user, choice)
    stats = dataset_version_freeze(project=project, rule=FreezeRule()).stats
    assert stats["label_flip_pairs"] == 24
    # 4 disagreeing pairs of 24: eps solves 2 eps (1 - eps) = 1/6
    assert stats["label_flip_rate"] == pytest.approx((1 - (1 - 2 / 6) ** 0.5) / 2)
    assert stats["agreement_alpha"] is not None


def test_freeze_reads_in_a_fixed_number_of_queries(project, raters, django_assert_max_num_queries):
    for _ in range(30):
        task = pair_task(project)
        vote(task, raters[0], "a")
        vote(task, raters[1], "a")
    with django_assert_max_num_queries(20):
        version = dataset_version_freeze(project=project, rule=FreezeRule())
    assert version.stats["examples"] == 30


FREEZE_FORM = {
    "min_votes": 1,
    "min_agreement": 0.5,
    "drop_ties": "on",
    "drop_both_bad": "on",
    "seed": 3,
    "test_fraction": 0.0,
}


def post_freeze(client, project, capture, form=FREEZE_FORM):
    """Submit the freeze form; the queued task runs inline once the job row is committed."""
    with capture(execute=True):
        return client.post(reverse("version-freeze", args=[project.pk]), form)


def test_freeze_form_queues_a_job_whose_page_leads_to_the_new_version(
    manager_client, project, celery_eager, django_capture_on_commit_callbacks
):
    for i in range(3):
        imported(pair_task(project, prompt=f"<b>p{i}</b>"))
    page = manager_client.get(reverse("version-list", args=[project.pk]))
    assert page.status_code == 200 and b'id="freeze-button"' in page.content
    response = post_freeze(manager_client, project, django_capture_on_commit_callbacks)
    job = FreezeJob.objects.get(project=project)
    assert response.status_code == 302
    assert response["Location"] == reverse("freeze-job", args=[project.pk, job.pk])
    assert job.state == JobState.SUCCEEDED and job.stage == "done" and job.finished_at
    version = DatasetVersion.objects.get(project=project)
    assert job.version == version
    assert version.seed == 3 and version.rule["min_votes"] == 1

    detail_url = reverse("version-detail", args=[project.pk, version.pk])
    assert manager_client.get(response["Location"])["Location"] == detail_url
    polled = manager_client.get(response["Location"], headers={"HX-Request": "true"})
    assert polled["HX-Redirect"] == detail_url  # a polling page follows to the version
    detail = manager_client.get(detail_url).content.decode()
    assert version.content_hash in detail
    assert 'id="export-jsonl"' in detail and 'id="export-parquet"' in detail
    assert "&lt;b&gt;p0&lt;/b&gt;" in detail and "<b>p0</b>" not in detail


def test_freeze_job_page_shows_why_nothing_was_frozen_and_stops_polling(
    manager_client, project, celery_eager, django_capture_on_commit_callbacks
):
    pair_task(project)
    form = {"min_votes": 1, "min_agreement": 0.5, "seed": 0, "test_fraction": 0.1}
    response = post_freeze(manager_client, project, django_capture_on_commit_callbacks, form)
    job = FreezeJob.objects.get()
    assert job.state == JobState.FAILED and "No task qualifies under this rule" in job.error
    page = manager_client.get(response["Location"]).content.decode()
    assert 'id="freeze-error"' in page and "No task qualifies under this rule" in page
    polled = manager_client.get(response["Location"], headers={"HX-Request": "true"})
    assert polled.status_code == 286 and "hx-trigger" not in polled.content.decode()  # htmx stops polling
    assert not DatasetVersion.objects.exists()

    bad = manager_client.post(reverse("version-freeze", args=[project.pk]), {**form, "min_votes": 0})
    assert bad.status_code == 400 and FreezeJob.objects.count() == 1


def test_freeze_job_page_polls_and_names_the_stage_until_done(
    manager_client, project, django_capture_on_commit_callbacks
):
    imported(pair_task(project))
    with django_capture_on_commit_callbacks(execute=False) as sent:
        response = manager_client.post(reverse("version-freeze", args=[project.pk]), FREEZE_FORM)
    assert len(sent) == 1  # the task is sent only once the job row is committed
    job = FreezeJob.objects.get()
    page = manager_client.get(response["Location"]).content.decode()
    assert "Waiting for the broker" in page and 'hx-trigger="every 1s"' in page  # not sent yet
    FreezeJob.objects.filter(pk=job.pk).update(sent_at=timezone.now())
    page = manager_client.get(response["Location"]).content.decode()
    assert "Waiting for a worker" in page and 'hx-trigger="every 1s"' in page
    assert "min_votes=1, min_strength=none, drop_ties=true, drop_both_bad=true, min_agreement=0.5" in page
    FreezeJob.objects.filter(pk=job.pk).update(state=JobState.RUNNING, stage="aggregating", stage_count=12)
    polled = manager_client.get(response["Location"], headers={"HX-Request": "true"})
    assert polled.status_code == 200 and "aggregating the votes of 12 tasks" in polled.content.decode()


def test_a_freeze_job_delivered_twice_freezes_once(project, manager):
    imported(pair_task(project))
    job = FreezeJob.objects.create(
        project=project, created_by=manager, rule={"min_votes": 1}, seed=0, test_fraction=0.0
    )
    freeze_job_run(job_id=job.pk)
    freeze_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED and DatasetVersion.objects.count() == 1
    assert job.version.created_by == manager


def test_freeze_reports_its_stages_in_order(project):
    for i in range(2):
        imported(pair_task(project, prompt=f"p{i}"))
    stages = []
    dataset_version_freeze(project=project, rule=FreezeRule(), on_stage=lambda s, n: stages.append((s, n)))
    assert stages == [("loading", 0), ("aggregating", 2), ("writing", 2)]


def test_version_pages_are_for_managers_only(annotator_client, project):
    imported(pair_task(project))
    version = dataset_version_freeze(project=project, rule=FreezeRule())
    assert annotator_client.get(reverse("version-list", args=[project.pk])).status_code == 403
    assert annotator_client.get(reverse("version-detail", args=[project.pk, version.pk])).status_code == 403
    assert annotator_client.post(reverse("version-freeze", args=[project.pk]), {}).status_code == 403
    job = FreezeJob.objects.create(project=project, rule={}, seed=0, test_fraction=0.0)
    assert annotator_client.get(reverse("freeze-job", args=[project.pk, job.pk])).status_code == 403


def test_a_freeze_job_is_found_only_under_its_own_project(manager_client, manager, project):
    other = ProjectFactory()
    MembershipFactory(project=other, user=manager, role="manager")
    job = FreezeJob.objects.create(project=project, rule={}, seed=0, test_fraction=0.0)
    assert manager_client.get(reverse("freeze-job", args=[other.pk, job.pk])).status_code == 404


def test_freeze_dataset_command_prints_the_new_version_id(project, capsys):
    imported(pair_task(project))
    call_command("freeze_dataset", "--project", project.name, "--rule", "min_votes=1,drop_ties=true")
    version = DatasetVersion.objects.get(project=project)
    assert capsys.readouterr().out.strip() == str(version.pk)


def test_freeze_dataset_command_reports_bad_rules_and_projects(project):
    with pytest.raises(CommandError, match="Unknown rule key 'votes'"):
        call_command("freeze_dataset", "--project", project.name, "--rule", "votes=2")
    with pytest.raises(CommandError, match="No project named 'nope'"):
        call_command("freeze_dataset", "--project", "nope")


def _stale(job, minutes: int = 60) -> None:
    from datetime import timedelta

    from django.utils import timezone

    type(job).objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=minutes))


def test_a_freeze_whose_worker_died_is_requeued_and_freezes_once(
    project, manager, monkeypatch, django_capture_on_commit_callbacks
):

    from annotation.services import versions
    from annotation.services.freeze_jobs import FREEZE_JOBS
    from tests.job_support import requeue_stale

    imported(pair_task(project))
    job = FreezeJob.objects.create(project=project, created_by=manager, rule={}, seed=0, test_fraction=0.0)
    real_rows_build = versions.rows_build

    def worker_killed(**kwargs):
        raise SystemExit("worker killed")  # not an Exception: nothing records the failure

    monkeypatch.setattr(versions, "rows_build", worker_killed)
    with pytest.raises(SystemExit):
        freeze_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert (job.state, job.stage, job.attempts) == (JobState.RUNNING, "aggregating", 1)
    assert requeue_stale(FREEZE_JOBS) == []  # still fresh

    _stale(job)
    with django_capture_on_commit_callbacks(execute=False) as sent:
        assert requeue_stale(FREEZE_JOBS) == [job.pk]
    assert len(sent) == 1  # the task goes out after the requeue commits
    job.refresh_from_db()
    assert (job.state, job.stage) == (JobState.QUEUED, "")

    monkeypatch.setattr(versions, "rows_build", real_rows_build)
    freeze_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert (job.state, job.attempts) == (JobState.SUCCEEDED, 2)
    assert list(DatasetVersion.objects.values_list("number", flat=True)) == [1]


def test_a_freeze_taken_over_before_it_commits_writes_no_version(project, manager, monkeypatch):
    from django.db.models import F

    from annotation.services import versions

    imported(pair_task(project))
    job = FreezeJob.objects.create(project=project, created_by=manager, rule={}, seed=0, test_fraction=0.0)
    real_insert = versions._examples_insert

    def insert_then_lose_the_lease(version, rows):
        real_insert(version, rows)
        # meanwhile the job was requeued as stale and claimed by another worker (here on the same
        # connection, so the rollback undoes this too; in production that worker's claim stays)
        FreezeJob.objects.filter(pk=job.pk).update(attempts=F("attempts") + 1)

    monkeypatch.setattr(versions, "_examples_insert", insert_then_lose_the_lease)
    freeze_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert not DatasetVersion.objects.exists()  # the version rolled back with the lost lease
    assert (job.state, job.version, job.finished_at) == (JobState.RUNNING, None, None)


def test_a_freeze_stale_too_often_fails_with_the_reason(project, django_capture_on_commit_callbacks):

    from annotation.services.freeze_jobs import FREEZE_JOBS
    from tests.job_support import requeue_stale

    job = FreezeJob.objects.create(
        project=project, rule={}, seed=0, test_fraction=0.0, state=JobState.RUNNING, attempts=3
    )
    _stale(job)
    with django_capture_on_commit_callbacks(execute=False) as sent:
        assert requeue_stale(FREEZE_JOBS) == []
    job.refresh_from_db()
    assert job.state == JobState.FAILED and not sent
    assert "stopped reporting 3 times; nothing was frozen" in job.error


def test_the_workers_stale_check_covers_freezes_and_imports(
    project, manager, settings, django_capture_on_commit_callbacks
):
    from annotation.models import ImportJob
    from prefstudio.job_kinds import recover_stale_jobs

    settings.ANNOTATION_JOB_STALE_SECONDS = 300
    freeze = FreezeJob.objects.create(
        project=project, rule={}, seed=0, test_fraction=0.0, state=JobState.RUNNING, attempts=1
    )
    upload = ImportJob.objects.create(
        project=project,
        created_by=manager,
        original_name="prefs.jsonl",
        state=JobState.RUNNING,
        attempts=1,
        report={"format": "trl", "stage": "writing"},
    )
    for job in (freeze, upload):
        _stale(job, minutes=4)
    assert recover_stale_jobs() == {
        "training": [],
        "generation": [],
        "freeze": [],
        "import": [],
        "loop": [],
        "domain_stream": [],
    }
    for job in (freeze, upload):
        _stale(job, minutes=6)
    with django_capture_on_commit_callbacks(execute=False) as sent:
        requeued = recover_stale_jobs()
    assert (requeued["freeze"], requeued["import"], len(sent)) == ([freeze.pk], [upload.pk], 2)
    upload.refresh_from_db()
    assert upload.state == JobState.QUEUED and upload.report == {"format": "trl", "stage": "queued"}


def test_a_running_job_that_never_reported_counts_as_stale_once_old(
    project, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    from annotation.services.freeze_jobs import FREEZE_JOBS
    from tests.job_support import requeue_stale

    job = FreezeJob.objects.create(
        project=project, rule={}, seed=0, test_fraction=0.0, state=JobState.RUNNING, attempts=1
    )
    assert job.heartbeat_at is None  # e.g. claimed before heartbeats existed
    assert requeue_stale(FREEZE_JOBS) == []  # created just now
    FreezeJob.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=False):
        assert requeue_stale(FREEZE_JOBS) == [job.pk]


@pytest.mark.django_db(transaction=True)
def test_a_heartbeat_thread_keeps_a_silent_stage_alive_and_stops_with_it(project):
    import time
    from datetime import timedelta

    from django.utils import timezone

    from jobs.leases import Lease

    old = timezone.now() - timedelta(hours=1)
    job = FreezeJob.objects.create(
        project=project, rule={}, seed=0, test_fraction=0.0, state=JobState.RUNNING, attempts=1
    )
    FreezeJob.objects.filter(pk=job.pk).update(heartbeat_at=old)
    with Lease(FreezeJob, job.pk, 1).heartbeat(every=0.05):
        deadline = time.monotonic() + 10
        while FreezeJob.objects.get(pk=job.pk).heartbeat_at == old and time.monotonic() < deadline:
            time.sleep(0.05)
    beaten = FreezeJob.objects.get(pk=job.pk).heartbeat_at
    assert beaten > old + timedelta(minutes=59)
    time.sleep(0.2)
    assert FreezeJob.objects.get(pk=job.pk).heartbeat_at == beaten  # the thread ended with the block


def test_a_freeze_whose_task_message_was_lost_is_sent_again_once(project, django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    from annotation.services.freeze_jobs import FREEZE_JOBS
    from tests.job_support import requeue_stale

    job = FreezeJob.objects.create(project=project, rule={}, seed=0, test_fraction=0.0)
    with django_capture_on_commit_callbacks(execute=False) as sent:
        requeue_stale(FREEZE_JOBS)
    assert not sent  # queued just now: its message is presumably on its way
    FreezeJob.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=False) as sent:
        assert requeue_stale(FREEZE_JOBS) == []  # resent, not requeued
        requeue_stale(FREEZE_JOBS)
    assert len(sent) == 1  # the second round finds it sent a moment ago
    job.refresh_from_db()
    assert job.state == JobState.QUEUED and job.heartbeat_at is not None


def test_the_freeze_page_says_when_a_worker_was_lost(manager_client, project):
    job = FreezeJob.objects.create(project=project, rule={}, seed=0, test_fraction=0.0)
    url = reverse("freeze-job", args=[project.pk, job.pk])
    assert 'id="lost-worker"' not in manager_client.get(url).content.decode()
    FreezeJob.objects.filter(pk=job.pk).update(attempts=1)  # claimed once, then requeued
    assert (
        "queued again: the worker of attempt 1 stopped reporting" in manager_client.get(url).content.decode()
    )
    FreezeJob.objects.filter(pk=job.pk).update(state=JobState.RUNNING, attempts=2, stage="aggregating")
    assert "attempt 2, after a lost worker" in manager_client.get(url).content.decode()


def test_freeze_preview_counts_what_the_freeze_makes_and_warns_of_an_empty_split(project, raters):
    agreed = [pair_task(project, prompt=f"agreed {i}") for i in range(6)]
    split = [pair_task(project, prompt=f"split {i}") for i in range(2)]
    for task in agreed:
        vote(task, raters[0], "a")
        vote(task, raters[1], "a")
    for task in split:
        vote(task, raters[0], "a")
        vote(task, raters[1], "b")
    preview = freeze_preview(project=project, rule=FreezeRule(), seed=0, test_fraction=0.1)
    assert (preview.examples, preview.train, preview.test, preview.tasks_considered) == (6, 5, 1, 8)
    assert preview.dropped == {"no strict majority (the annotators disagree)": 2}
    assert any("Only 1 held-out row:" in w for w in preview.warnings)
    version = dataset_version_freeze(project=project, rule=FreezeRule(), seed=0, test_fraction=0.1)
    assert (version.stats["examples"], version.stats["train"], version.stats["test"]) == (6, 5, 1)
    none_held_out = freeze_preview(project=project, rule=FreezeRule(), seed=0, test_fraction=0.0)
    assert none_held_out.test == 0 and any(
        "held-out split would be empty" in w for w in none_held_out.warnings
    )
    nothing = freeze_preview(project=project, rule=FreezeRule(min_votes=3))
    assert nothing.examples == 0 and nothing.warnings == [
        "No task qualifies under this rule: freezing would fail."
    ]
    assert DatasetVersion.objects.filter(project=project).count() == 1  # previews write nothing


def test_the_freeze_form_asks_for_a_preview_that_names_counts_and_bad_fields(manager_client, project):
    imported(pair_task(project, prompt="one"))
    url = reverse("version-freeze-preview", args=[project.pk])
    page = manager_client.get(reverse("version-list", args=[project.pk])).content.decode()
    assert f'hx-get="{url}"' in page and 'id="freeze-preview"' in page
    fields = {"min_votes": 1, "min_agreement": 0.5, "drop_ties": "on", "drop_both_bad": "on", "seed": 0}
    shown = manager_client.get(url, {**fields, "test_fraction": 0.1}).content.decode()
    assert 'data-train="1" data-test="0"' in shown and "held-out split would be empty" in shown
    bad = manager_client.get(url, {**fields, "test_fraction": 5}).content.decode()
    assert "test_fraction" in bad and "freeze-preview-counts" not in bad


def test_current_judgments_export_streams_the_rules_rows_marked_not_a_version(
    manager_client, project, raters
):
    import json

    for i in range(3):
        task = pair_task(project, prompt=f"now {i}")
        vote(task, raters[0], "a")
    response = manager_client.get(reverse("current-judgments-export", args=[project.pk]))
    assert response.status_code == 200 and response["X-PrefStudio-Not-A-Version"] == "true"
    assert "current-judgments-not-a-version" in response["Content-Disposition"]
    rows = [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]
    assert sorted(r["prompt"] for r in rows) == ["now 0", "now 1", "now 2"] and {
        r["split"] for r in rows
    } <= {"train", "test"}
    assert not DatasetVersion.objects.filter(project=project).exists()  # nothing frozen
    page = manager_client.get(reverse("version-list", args=[project.pk])).content.decode()
    assert 'id="current-export"' in page


def test_annotators_cannot_export_current_judgments(annotator_client, project):
    assert annotator_client.get(reverse("current-judgments-export", args=[project.pk])).status_code == 403
