from django.urls import path

from .views import annotate, assets, construction, imports, items, projects, review, versions

urlpatterns = [
    # projects (views/projects.py)
    path("projects/new/", projects.project_create, name="project-create"),
    path("projects/<int:project_id>/", projects.project_detail, name="project-detail"),
    path("projects/<int:project_id>/settings/", projects.project_settings, name="project-settings"),
    # imports (views/imports.py)
    path("projects/<int:project_id>/import/", imports.import_upload, name="import-upload"),
    path("projects/<int:project_id>/import/<int:import_id>/", imports.import_detail, name="import-detail"),
    path(
        "projects/<int:project_id>/import/<int:import_id>/confirm/",
        imports.import_confirm,
        name="import-confirm",
    ),
    # curation: the item browser, an item's page, the disagreement queue (views/items.py)
    path("projects/<int:project_id>/items/", items.item_list, name="item-list"),
    path("projects/<int:project_id>/items/<int:item_id>/", items.item_detail, name="item-detail"),
    path(
        "projects/<int:project_id>/agreement/disagreements/",
        items.disagreement_list,
        name="disagreement-queue",
    ),
    # annotation (views/annotate.py)
    path("projects/<int:project_id>/annotate/", annotate.annotate, name="annotate"),
    path("projects/<int:project_id>/annotate/next/", annotate.annotate_next, name="annotate-next"),
    path(
        "projects/<int:project_id>/annotate/<int:assignment_id>/submit/",
        annotate.annotate_submit,
        name="annotate-submit",
    ),
    path(
        "projects/<int:project_id>/annotate/<int:assignment_id>/skip/",
        annotate.annotate_skip,
        name="annotate-skip",
    ),
    path(
        "projects/<int:project_id>/annotate/<int:assignment_id>/",
        annotate.annotate_assignment,
        name="annotate-assignment",
    ),
    # an annotator's own recent judgments and skipped tasks (views/review.py)
    path("projects/<int:project_id>/mine/judgments/", review.my_judgments, name="my-judgments"),
    path(
        "projects/<int:project_id>/mine/judgments/<int:judgment_id>/correct/",
        review.my_judgment_correct,
        name="my-judgment-correct",
    ),
    path("projects/<int:project_id>/mine/skipped/", review.my_skipped, name="my-skipped"),
    path(
        "projects/<int:project_id>/mine/skipped/<int:assignment_id>/take-back/",
        review.my_skipped_take_back,
        name="my-skipped-take-back",
    ),
    path("assets/<str:sha256>/", assets.asset_file, name="asset-file"),  # views/assets.py
    # agreement, versions and exports (views/versions.py)
    path("projects/<int:project_id>/agreement/", versions.agreement, name="agreement"),
    path("projects/<int:project_id>/versions/", versions.version_list, name="version-list"),
    path("projects/<int:project_id>/versions/freeze/", versions.version_freeze, name="version-freeze"),
    path(
        "projects/<int:project_id>/versions/current.jsonl",
        versions.current_judgments_export,
        name="current-judgments-export",
    ),
    path(
        "projects/<int:project_id>/versions/preview/",
        versions.version_freeze_preview,
        name="version-freeze-preview",
    ),
    path(
        "projects/<int:project_id>/versions/freeze/<int:job_id>/",
        versions.freeze_job_detail,
        name="freeze-job",
    ),
    path(
        "projects/<int:project_id>/versions/<int:version_id>/", versions.version_detail, name="version-detail"
    ),
    path(
        "projects/<int:project_id>/versions/<int:version_id>/export.<str:fmt>",
        versions.version_export,
        name="version-export",
    ),
    # data construction: gold, step problems and decisions, per-type agreement (views/construction.py);
    # generation and the step check are in training/urls.py
    path("projects/<int:project_id>/gold/", construction.gold_list, name="gold-list"),
    path("projects/<int:project_id>/gold/rate/", construction.gold_rate, name="gold-rate"),
    path("projects/<int:project_id>/gold/<int:item_id>/", construction.gold_mark, name="gold-mark"),
    path("projects/<int:project_id>/steps/problems/", construction.step_arithmetic, name="step-arithmetic"),
    path("projects/<int:project_id>/steps/<int:item_id>/", construction.step_decide, name="step-decide"),
    path("projects/<int:project_id>/agreement/types/", construction.agreement_types, name="agreement-types"),
    path(
        "projects/<int:project_id>/build-multi-image/",
        construction.multi_image_build,
        name="multi-image-build",
    ),
]
