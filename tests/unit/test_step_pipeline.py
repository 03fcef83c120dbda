import random

import pytest
from django.core.exceptions import ValidationError

from annotation.builders.arithmetic import problem_generate
from annotation.models import Assignment, AssignmentState, Judgment, Task, TaskType
from annotation.services.step_pipeline import (
    arithmetic_items_add,
    step_pairs_for_solution,
    step_pipeline_run,
    step_proposal_review,
    step_proposals,
)
from tests.factories import CandidateFactory
from training.services.generation import GenerationSettings, generation_job_create, generation_job_run

PROBLEM = problem_generate(3)


def wrong_step(step: str) -> str:
    head, result = step.rsplit("=", 1)
    return f"{head}= {int(result) + 1}"


def fake_sampler(problem=PROBLEM, bad_share=0.5):
    """Seeded: each continuation is the reference from the prefix on, or one with a wrong first step."""

    def sample(*, question, prefix, n, seed):
        rng = random.Random(seed)
        rest = list(problem.steps[len(prefix) :]) + [f"The answer is {problem.answer}."]
        out = []
        for i in range(n):
            if rng.random() < bad_share:
                out.append(
                    "\n".join([wrong_step(rest[0]) if "=" in rest[0] else "The answer is 0.", *rest[1:]])
                )
            else:
                # vary the wording of the first correct step so proposals are distinct
                out.append("\n".join([f"{rest[0]}" + (" apples" * (i % 2)), *rest[1:]]))
        return out

    return sample


def test_pipeline_pairs_first_wrong_step_with_correct_resampled_steps():
    steps = [PROBLEM.steps[0], wrong_step(PROBLEM.steps[1]), *PROBLEM.steps[2:], "The answer is 1."]
    check, pairs = step_pairs_for_solution(
        question=PROBLEM.question, answer=PROBLEM.answer, steps=steps, sampler=fake_sampler(), n=8, seed=1
    )
    assert check.first_wrong == 1
    assert pairs, "at least one resampled continuation reaches the answer"
    for pair in pairs:
        assert pair.initial_reason_steps == (PROBLEM.steps[0],)
        assert pair.rejected == wrong_step(PROBLEM.steps[1])
        assert pair.chosen.startswith(PROBLEM.steps[1])
    assert len({p.chosen for p in pairs}) == len(pairs)


def test_pipeline_proposes_nothing_for_a_correct_solution():
    steps = [*PROBLEM.steps, f"The answer is {PROBLEM.answer}."]
    check, pairs = step_pairs_for_solution(
        question=PROBLEM.question, answer=PROBLEM.answer, steps=steps, sampler=fake_sampler(), n=4
    )
    assert check.correct and pairs == []


def test_pipeline_keeps_no_continuation_that_misses_the_answer():
    steps = [wrong_step(PROBLEM.steps[0])]
    _, pairs = step_pairs_for_solution(
        question=PROBLEM.question,
        answer=PROBLEM.answer,
        steps=steps,
        sampler=fake_sampler(bad_share=1.0),
        n=6,
    )
    assert pairs == []


def test_pipeline_is_deterministic_for_a_seed():
    steps = [wrong_step(PROBLEM.steps[0])]
    runs = [
        step_pairs_for_solution(
            question=PROBLEM.question, answer=PROBLEM.answer, steps=steps, sampler=fake_sampler(), n=6, seed=5
        )[1]
        for _ in range(2)
    ]
    assert runs[0] == runs[1]


@pytest.fixture
def step_project(project):
    project.task_type = TaskType.STEPWISE
    project.save()
    return project


def solved_item(project, *, wrong: bool):
    item = arithmetic_items_add(project=project, count=1, seed=3)[0]
    steps = list(PROBLEM.steps) + [f"The answer is {PROBLEM.answer}."]
    if wrong:
        steps[1] = wrong_step(steps[1])
    CandidateFactory(item=item, position=0, text="\n".join(steps), steps=steps, provenance={"kind": "model"})
    return item


def test_arithmetic_items_carry_answer_and_skip_duplicates(step_project):
    items = arithmetic_items_add(project=step_project, count=3, seed=10)
    assert [i.metadata["answer"] for i in items] == [str(problem_generate(s).answer) for s in (10, 11, 12)]
    assert arithmetic_items_add(project=step_project, count=3, seed=10) == []


def test_arithmetic_items_need_a_stepwise_project(project):
    with pytest.raises(ValidationError):
        arithmetic_items_add(project=project, count=1)


def test_run_stores_proposals_without_tasks_until_accepted(step_project, manager):
    solved_item(step_project, wrong=True)
    stats = step_pipeline_run(project=step_project, sampler=fake_sampler(), n=6, seed=0)
    assert stats["checked"] == 1 and stats["wrong"] == 1 and stats["proposals"] >= 1
    proposal = step_proposals(project=step_project).first()
    chosen, rejected = proposal.candidates.order_by("position")
    assert rejected.text == wrong_step(PROBLEM.steps[1])
    assert proposal.metadata["initial_reason_steps"] == PROBLEM.steps[0] + "\n"
    assert not Task.objects.filter(item=proposal).exists()
    # running again proposes nothing new
    assert step_pipeline_run(project=step_project, sampler=fake_sampler(), n=6, seed=0)["proposals"] == 0

    step_proposal_review(item=proposal, reviewer=manager, accept=True)
    task = Task.objects.get(item=proposal)
    assert task.candidate_ids == [chosen.pk, rejected.pk]
    assert Judgment.objects.get(task=task).choice == "a"
    assert Assignment.objects.get(task=task).state == AssignmentState.DONE
    with pytest.raises(ValidationError, match="already accepted"):
        step_proposal_review(item=proposal, reviewer=manager, accept=False)


def test_rejected_proposal_gets_no_task(step_project, manager):
    solved_item(step_project, wrong=True)
    step_pipeline_run(project=step_project, sampler=fake_sampler(), n=6)
    proposal = step_proposals(project=step_project).first()
    step_proposal_review(item=proposal, reviewer=manager, accept=False)
    assert not Task.objects.filter(item=proposal).exists()
    assert proposal.pk not in step_proposals(project=step_project).values_list("pk", flat=True)


def test_correct_solution_counts_as_correct_and_proposes_nothing(step_project):
    solved_item(step_project, wrong=False)
    stats = step_pipeline_run(project=step_project, sampler=fake_sampler(), n=4)
    assert stats["correct"] == 1 and stats["proposals"] == 0


def test_step_pipeline_job_runs_through_the_generation_job(step_project, django_capture_on_commit_callbacks):
    from training.models import GenerationJob, GenerationKind

    solved_item(step_project, wrong=True)
    fake = fake_sampler()

    def factory(spec):
        def sample(prompts, settings, seed):
            # a fixed seed: the job's seed follows database ids, which depend on the tests run before
            return fake(question=PROBLEM.question, prefix=[PROBLEM.steps[0]], n=len(prompts), seed=0)

        return sample

    with django_capture_on_commit_callbacks(execute=False):
        job = generation_job_create(
            project=step_project,
            settings=GenerationSettings(k=6),
            spec="tiny",
            kind=GenerationKind.STEP_PIPELINE,
        )
    generation_job_run(job_id=job.pk, sampler_factory=factory)
    job = GenerationJob.objects.get(pk=job.pk)
    assert job.state == "succeeded", job.error
    assert job.result["proposals"] >= 1 and (job.progress_done, job.progress_total) == (1, 1)


def test_step_review_page_adds_problems_and_accepts_a_proposal(step_project, manager_client):
    from django.urls import reverse

    manager_client.post(reverse("step-arithmetic", args=[step_project.pk]), {"count": "2", "seed": "40"})
    assert step_project.items.count() == 2
    solved_item(step_project, wrong=True)
    step_pipeline_run(project=step_project, sampler=fake_sampler(), n=6)
    proposal = step_proposals(project=step_project).first()
    page = manager_client.get(reverse("step-review", args=[step_project.pk])).content.decode()
    assert f'id="proposal-{proposal.pk}"' in page
    manager_client.post(reverse("step-decide", args=[step_project.pk, proposal.pk]), {"decision": "accept"})
    assert Task.objects.filter(item=proposal).exists()
    again = manager_client.post(
        reverse("step-decide", args=[step_project.pk, proposal.pk]), {"decision": "reject"}, follow=True
    )
    assert "already accepted" in again.content.decode()


def test_only_model_solutions_with_numeric_answers_are_checked(step_project):
    item = solved_item(step_project, wrong=True)
    CandidateFactory(item=item, position=1, text="imported step", provenance={"kind": "imported"})
    other = arithmetic_items_add(project=step_project, count=1, seed=99)[0]
    other.metadata["answer"] = "x = 5"
    other.save()
    CandidateFactory(item=other, position=0, text="1 + 1 = 2", provenance={"kind": "model"})
    stats = step_pipeline_run(project=step_project, sampler=fake_sampler(), n=4)
    assert (stats["checked"], stats["unparsed"]) == (1, 1)


def test_step_pipeline_job_needs_a_stepwise_project(project):
    from training.models import GenerationKind

    with pytest.raises(ValidationError, match="step-wise"):
        generation_job_create(
            project=project, settings=GenerationSettings(k=2), spec="tiny", kind=GenerationKind.STEP_PIPELINE
        )


def test_continuations_that_restate_the_prefix_pair_their_first_new_step():
    steps = [PROBLEM.steps[0], wrong_step(PROBLEM.steps[1])]

    def restating(*, question, prefix, n, seed):
        return ["\n".join([*prefix, *PROBLEM.steps[1:], f"The answer is {PROBLEM.answer}."])] * n

    _, pairs = step_pairs_for_solution(
        question=PROBLEM.question, answer=PROBLEM.answer, steps=steps, sampler=restating, n=2
    )
    assert [p.chosen for p in pairs] == [PROBLEM.steps[1]]
