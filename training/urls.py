from django.urls import path

from .views import (
    compare,
    domain_streams,
    generation,
    jobs,
    launch,
    loops,
    policy_comparison,
    reward_comparison,
    try_it,
)

urlpatterns = [
    # generation jobs and the step check of a project (views/generation.py)
    path("projects/<int:project_id>/generate/", generation.generation_list, name="generation-list"),
    path("projects/<int:project_id>/generate/start/", generation.generation_start, name="generation-start"),
    path(
        "projects/<int:project_id>/generate/score/",
        generation.reward_scores_start,
        name="reward-scores-start",
    ),
    path(
        "projects/<int:project_id>/generate/<int:job_id>/",
        generation.generation_detail,
        name="generation-detail",
    ),
    path(
        "projects/<int:project_id>/generate/<int:job_id>/cancel/",
        generation.generation_cancel,
        name="generation-cancel",
    ),
    path("projects/<int:project_id>/steps/", generation.step_review, name="step-review"),
    path("projects/<int:project_id>/steps/run/", generation.step_pipeline_start, name="step-pipeline-start"),
    # DPO implicit reward vs a reward model under shift (views/reward_comparison.py)
    path(
        "projects/<int:project_id>/reward-comparisons/",
        reward_comparison.reward_comparison_list,
        name="reward-comparison-list",
    ),
    path(
        "projects/<int:project_id>/reward-comparisons/start/",
        reward_comparison.reward_comparison_start,
        name="reward-comparison-start",
    ),
    path(
        "projects/<int:project_id>/reward-comparisons/<int:comparison_id>/",
        reward_comparison.reward_comparison_detail,
        name="reward-comparison-detail",
    ),
    # PPO vs DPO on held-out prompts (views/policy_comparison.py)
    path(
        "projects/<int:project_id>/policy-comparisons/",
        policy_comparison.policy_comparison_list,
        name="policy-comparison-list",
    ),
    path(
        "projects/<int:project_id>/policy-comparisons/start/",
        policy_comparison.policy_comparison_start,
        name="policy-comparison-start",
    ),
    path(
        "projects/<int:project_id>/policy-comparisons/<int:comparison_id>/",
        policy_comparison.policy_comparison_detail,
        name="policy-comparison-detail",
    ),
    # preference training across domains (views/domain_streams.py)
    path("projects/<int:project_id>/domains/", domain_streams.domain_stream_list, name="domain-stream-list"),
    path(
        "projects/<int:project_id>/domains/start/",
        domain_streams.domain_stream_start,
        name="domain-stream-start",
    ),
    path(
        "projects/<int:project_id>/domains/<int:stream_id>/",
        domain_streams.domain_stream_detail,
        name="domain-stream-detail",
    ),
    path(
        "projects/<int:project_id>/domains/<int:stream_id>/cancel/",
        domain_streams.domain_stream_cancel_view,
        name="domain-stream-cancel",
    ),
    # online loops (views/loops.py)
    path("projects/<int:project_id>/loops/", loops.loop_list, name="loop-list"),
    path("projects/<int:project_id>/loops/start/", loops.loop_start, name="loop-start"),
    path("projects/<int:project_id>/loops/<int:loop_id>/", loops.loop_detail, name="loop-detail"),
    path("projects/<int:project_id>/loops/<int:loop_id>/cancel/", loops.loop_cancel_view, name="loop-cancel"),
    path("projects/<int:project_id>/loops/<int:loop_id>/resume/", loops.loop_resume_view, name="loop-resume"),
    # training jobs (views/jobs.py, launch.py, compare.py)
    path("projects/<int:project_id>/jobs/", jobs.job_list, name="job-list"),
    path("projects/<int:project_id>/jobs/new/", launch.job_new, name="job-new"),
    path("projects/<int:project_id>/jobs/compare/", compare.job_compare, name="job-compare"),
    path("projects/<int:project_id>/jobs/<int:job_id>/", jobs.job_detail, name="job-detail"),
    path("projects/<int:project_id>/jobs/<int:job_id>/metrics/", jobs.job_metrics, name="job-metrics"),
    path(
        "projects/<int:project_id>/jobs/<int:job_id>/metrics.<str:fmt>",
        jobs.job_metrics_download,
        name="job-metrics-download",
    ),
    path("projects/<int:project_id>/jobs/<int:job_id>/cancel/", jobs.job_cancel, name="job-cancel"),
    path(
        "projects/<int:project_id>/jobs/<int:job_id>/artifacts/delete/",
        jobs.job_artifacts_remove,
        name="job-artifacts-delete",
    ),
    path("projects/<int:project_id>/jobs/<int:job_id>/delete/", jobs.job_remove, name="job-delete"),
    path("projects/<int:project_id>/jobs/<int:job_id>/clone/", launch.job_clone, name="job-clone"),
    path(
        "projects/<int:project_id>/jobs/<int:job_id>/artifacts/<int:artifact_id>/",
        jobs.job_artifact,
        name="job-artifact",
    ),
    path(
        "projects/<int:project_id>/jobs/<int:job_id>/samples/<int:step>/<str:name>",
        jobs.job_sample,
        name="job-sample",
    ),
    path("projects/<int:project_id>/jobs/<int:job_id>/try/", try_it.try_it_start, name="try-it-start"),
    path(
        "projects/<int:project_id>/jobs/<int:job_id>/try/<int:try_id>/",
        try_it.try_it_detail,
        name="try-it-detail",
    ),
    path(
        "projects/<int:project_id>/jobs/<int:job_id>/evaluation/",
        compare.job_evaluation,
        name="job-evaluation",
    ),
]
