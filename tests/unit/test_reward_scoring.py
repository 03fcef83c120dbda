"""Scoring a project's candidates with a reward model: a generation-queue job stores one score per
candidate and model with its provenance; the form and the service refuse a model the user may not see,
a model that is not a reward model, and a user who is not a manager."""

import pytest
import torch
from django.core.exceptions import ValidationError
from django.urls import reverse

from annotation.models import Candidate
from jobs.models import JobState
from tests.factories import CandidateFactory, ItemFactory, ProjectFactory
from training.engine.lm.models import load_tokenizer
from training.engine.lm.rewards import load_reward_model
from training.engine.lm.scoring import score_responses
from training.models import CandidateScore, GenerationJob, GenerationKind, Location, ModelEntry, ModelKind
from training.services.generation import generation_job_run
from training.services.scoring import reward_scores_job_create


def reward_entry(folder=None, *, name="tiny-rm", project=None, kind=ModelKind.REWARD_MODEL) -> ModelEntry:
    return ModelEntry.objects.create(
        name=name, kind=kind, location=Location.LOCAL, path=str(folder or "/nowhere"), project=project
    )


def length_scorer(calls=None):
    """A stand-in reward model: the response's length, so every score is checkable."""

    def factory(spec, *, max_length=None):
        def score(pairs):
            if calls is not None:
                calls.append(len(pairs))
            return [float(len(response)) for _, response in pairs]

        return score

    return factory


def run_scoring(project, entry, user, captured, **kwargs):
    with captured(execute=False):
        job = reward_scores_job_create(project=project, model=entry, created_by=user)
    generation_job_run(job_id=job.pk, **kwargs)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.error
    return job


def test_every_candidate_gets_a_score_with_provenance(project, manager, django_capture_on_commit_callbacks):
    items = [ItemFactory(project=project) for _ in range(2)]
    for item in items:
        CandidateFactory(item=item, position=0, text="short")
        CandidateFactory(item=item, position=1, text="a longer answer")
    entry = reward_entry(project=project)
    calls = []
    job = run_scoring(
        project, entry, manager, django_capture_on_commit_callbacks, scorer_factory=length_scorer(calls)
    )
    assert job.kind == GenerationKind.REWARD_SCORES and calls == [2, 2]
    assert job.result == {"items": 2, "scored": 4, "without_text": 0}
    scores = CandidateScore.objects.order_by("candidate_id")
    assert [s.score for s in scores] == [5.0, 15.0, 5.0, 15.0]
    for s in scores:
        assert (s.model_id, s.model_name, s.model_spec) == (entry.pk, "tiny-rm", "local:/nowhere")
        assert (s.job_id, s.scored_by, s.scored_at is not None) == (job.pk, manager, True)
    assert set(scores.values_list("candidate_id", flat=True)) == set(
        Candidate.objects.values_list("pk", flat=True)
    )


def test_scoring_again_with_the_same_model_replaces_its_scores(
    project, manager, django_capture_on_commit_callbacks
):
    CandidateFactory(item=ItemFactory(project=project), position=0, text="abc")
    entry = reward_entry(project=project)
    run_scoring(project, entry, manager, django_capture_on_commit_callbacks, scorer_factory=length_scorer())
    second = run_scoring(
        project, entry, manager, django_capture_on_commit_callbacks, scorer_factory=length_scorer()
    )
    assert list(CandidateScore.objects.values_list("job_id", "score")) == [(second.pk, 3.0)]


def test_a_real_tiny_reward_model_scores_as_the_engine_does(
    tmp_path, project, manager, django_capture_on_commit_callbacks
):
    torch.manual_seed(0)
    tokenizer = load_tokenizer("tiny")
    model = load_reward_model("tiny", pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    item = ItemFactory(project=project, prompt="cat dog")
    texts = ["sun moon", "FISH ROCK TREE"]
    for position, text in enumerate(texts):
        CandidateFactory(item=item, position=position, text=text)
    entry = reward_entry(tmp_path / "rm", project=project)
    run_scoring(project, entry, manager, django_capture_on_commit_callbacks)
    expected = score_responses(model, tokenizer, [("cat dog", t) for t in texts])
    stored = list(CandidateScore.objects.order_by("candidate__position").values_list("score", flat=True))
    assert stored == pytest.approx(expected, abs=1e-5)


def test_the_service_refuses_another_projects_model_and_a_causal_lm(project, manager):
    other = ProjectFactory()
    with pytest.raises(ValidationError) as err:
        reward_scores_job_create(project=project, model=reward_entry(project=other), created_by=manager)
    assert "model" in err.value.message_dict
    causal = reward_entry(name="policy", kind=ModelKind.CAUSAL_LM)
    with pytest.raises(ValidationError) as err:
        reward_scores_job_create(project=project, model=causal, created_by=manager)
    assert "not a reward model" in err.value.message_dict["model"][0]
    assert not GenerationJob.objects.exists()


def _post(client, project, entry):
    return client.post(reverse("reward-scores-start", args=[project.pk]), {"model": entry.pk})


def test_the_form_lists_only_visible_reward_models_and_refuses_others(project, manager_client):
    ItemFactory(project=project)
    mine = reward_entry(name="mine-rm", project=project)
    foreign = reward_entry(name="foreign-rm", project=ProjectFactory())
    causal = reward_entry(name="policy-lm", kind=ModelKind.CAUSAL_LM)
    page = manager_client.get(reverse("generation-list", args=[project.pk]))
    choices = list(page.context["score_form"].fields["model"].queryset)
    assert choices == [mine]
    for entry in (foreign, causal):
        response = _post(manager_client, project, entry)
        assert response.status_code == 400
        assert "model" in response.context["score_form"].errors
    assert not GenerationJob.objects.exists()
    response = _post(manager_client, project, mine)
    assert response.status_code == 302
    assert GenerationJob.objects.get().kind == GenerationKind.REWARD_SCORES
    job_page = manager_client.get(response.url)
    assert job_page.status_code == 200 and b"Reward-model scoring" in job_page.content


def test_a_non_manager_is_refused(project, annotator_client):
    entry = reward_entry(project=project)
    response = _post(annotator_client, project, entry)
    assert response.status_code == 403
    assert not GenerationJob.objects.exists()


def test_scores_are_shown_escaped_on_the_generation_page(project, manager, manager_client):
    candidate = CandidateFactory(item=ItemFactory(project=project), position=0, text="<script>x()</script>")
    entry = reward_entry(project=project)
    CandidateScore.objects.create(
        candidate=candidate,
        model=entry,
        score=1.25,
        model_name=entry.name,
        model_spec=entry.spec,
        scored_at=candidate.created_at,
        scored_by=manager,
    )
    page = manager_client.get(reverse("generation-list", args=[project.pk])).content.decode()
    assert "&lt;script&gt;x()&lt;/script&gt;" in page and "<script>x()" not in page
    assert "1.2500" in page and "tiny-rm" in page
