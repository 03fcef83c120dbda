"""Projects, items, candidates, tasks, assignments, judgments and frozen dataset versions.

Models stay lean: every state change lives in ``annotation.services``.
"""

from django.conf import settings
from django.db import models

from jobs.models import Job


class TaskType(models.TextChoices):
    PAIRWISE = "pairwise", "Pairwise text"
    RANKING = "ranking", "Ranking of N responses"
    STEPWISE = "stepwise", "Step-wise reasoning"
    FACTUALITY = "factuality", "Sentence factuality"
    MULTI_IMAGE = "multi_image", "Multi-image prompt"
    IMAGE_PAIR = "image_pair", "Image pair"


class Role(models.TextChoices):
    MANAGER = "manager", "Manager"
    ANNOTATOR = "annotator", "Annotator"


class Split(models.TextChoices):
    TRAIN = "train", "Train"
    TEST = "test", "Test"


class Project(models.Model):
    name = models.CharField(max_length=200, unique=True)
    task_type = models.CharField(max_length=20, choices=TaskType.choices, default=TaskType.PAIRWISE)
    guidelines = models.TextField(blank=True, help_text="Markdown; rendered sanitised.")
    overlap = models.PositiveSmallIntegerField(default=1, help_text="Judgments wanted per task.")
    assignment_ttl_minutes = models.PositiveIntegerField(default=30)
    gold_rate = models.FloatField(
        default=0.0, help_text="Share of served tasks that are gold (attention-check) tasks, 0 to 0.5."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Membership(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="membership_unique_user")]

    def __str__(self):
        return f"{self.user} {self.role} of {self.project}"


class Asset(models.Model):
    """An image, content-addressed by the sha256 of its bytes and verified by Pillow."""

    sha256 = models.CharField(max_length=64, unique=True)
    file = models.FileField(upload_to="assets/", max_length=300)
    format = models.CharField(max_length=20)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    size_bytes = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"{self.sha256[:12]} {self.width}x{self.height} {self.format}"


class Item(models.Model):
    """One prompt: text and/or conversation messages, and ordered images."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="items")
    prompt = models.TextField(blank=True)
    messages = models.JSONField(null=True, blank=True, help_text="Conversation turns [{role, content}].")
    metadata = models.JSONField(default=dict, blank=True)
    source = models.CharField(max_length=300, blank=True)
    split = models.CharField(max_length=10, choices=Split.choices, blank=True)
    content_hash = models.CharField(max_length=64, help_text="Identifies duplicate rows within a project.")
    is_gold = models.BooleanField(default=False)
    gold_payload = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["project", "content_hash"]),
            models.Index(fields=["project"], condition=models.Q(is_gold=True), name="item_gold_by_project"),
        ]

    def __str__(self):
        return f"item {self.pk} of {self.project_id}"


class ItemImage(models.Model):
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="images")
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    position = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["position"]
        constraints = [models.UniqueConstraint(fields=["item", "position"], name="item_image_position")]

    def __str__(self):
        return f"image {self.position} of item {self.item_id}"


class Candidate(models.Model):
    """A response to an item: text, an image, steps (step-wise) or sentences (factuality)."""

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="candidates")
    position = models.PositiveSmallIntegerField()
    text = models.TextField(blank=True)
    messages = models.JSONField(
        null=True, blank=True, help_text="Assistant turns when the source was conversational."
    )
    asset = models.ForeignKey(Asset, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    steps = models.JSONField(null=True, blank=True)
    sentences = models.JSONField(null=True, blank=True)
    provenance = models.JSONField(
        default=dict, blank=True, help_text='{"kind": "imported"|"human"|"model", ...}'
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["item_id", "position"]
        constraints = [models.UniqueConstraint(fields=["item", "position"], name="candidate_position")]

    def __str__(self):
        return f"candidate {self.position} of item {self.item_id}"


class Task(models.Model):
    """What one annotator is shown: an item and the ordered candidates to judge."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="tasks")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="tasks")
    candidate_ids = models.JSONField(help_text="Ordered candidate ids: [a, b] for a pair, N for a ranking.")
    complete = models.BooleanField(  # db_default: the import writes tasks with raw INSERTs
        default=False,
        db_default=False,
        help_text="Holds the project's overlap of done assignments (kept by services.progress).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [  # the queue's pick: the first incomplete task of a project by id, in O(log n)
            models.Index(fields=["project", "id"], condition=models.Q(complete=False), name="task_queue_open")
        ]

    def __str__(self):
        return f"task {self.pk} ({self.project_id})"


class AssignmentState(models.TextChoices):
    ACTIVE = "active", "Active"
    DONE = "done", "Done"
    SKIPPED = "skipped", "Skipped"


class Assignment(models.Model):
    """One annotator's hold on a task; at most one row per (task, annotator)."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="assignments")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments"
    )
    state = models.CharField(max_length=10, choices=AssignmentState.choices, default=AssignmentState.ACTIVE)
    shown_order = models.JSONField(help_text="Candidate ids in the order shown, left to right.")
    skip_reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["task", "annotator"], name="assignment_once_per_annotator")
        ]
        indexes = [models.Index(fields=["annotator", "state"])]

    def __str__(self):
        return f"task {self.task_id} for {self.annotator_id} ({self.state})"


class ProjectProgress(models.Model):
    """A project's queue counters, kept in the transactions that change them (``services.progress``)."""

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="progress")
    tasks = models.IntegerField(default=0)
    tasks_complete = models.IntegerField(default=0, help_text="Tasks with ``complete`` set.")
    judgments_done = models.IntegerField(default=0, help_text="Done assignments (human judgments).")

    def __str__(self):
        return f"progress of {self.project_id}: {self.judgments_done} done, {self.tasks} tasks"


class AnnotatorProgress(models.Model):
    """One annotator's counters in one project (``services.progress``)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    done = models.IntegerField(default=0)
    skipped = models.IntegerField(default=0)
    final_open = models.IntegerField(
        default=0, help_text="Incomplete tasks this annotator has done or skipped (not theirs to take)."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "annotator"], name="annotator_progress_once")
        ]

    def __str__(self):
        return f"progress of {self.annotator_id} in {self.project_id}"


class Choice(models.TextChoices):
    A = "a", "A is better"
    B = "b", "B is better"
    TIE = "tie", "Tie"
    BOTH_BAD = "both_bad", "Both bad"


class JudgmentSource(models.TextChoices):
    HUMAN = "human", "Human"
    IMPORTED = "imported", "Imported"


class Judgment(models.Model):
    """Append-only. A correction is a new judgment that names the one it supersedes."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="judgments")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="judgments"
    )
    source = models.CharField(max_length=10, choices=JudgmentSource.choices, default=JudgmentSource.HUMAN)
    choice = models.CharField(max_length=10, choices=Choice.choices, blank=True)
    strength = models.PositiveSmallIntegerField(null=True, blank=True)
    label_score = models.FloatField(null=True, blank=True, help_text="Soft label, e.g. Pick-a-Pic label_0.")
    ranking = models.JSONField(
        null=True, blank=True, help_text="Groups of candidate ids, best first; a group is a tie."
    )
    ratings = models.JSONField(null=True, blank=True)
    step_labels = models.JSONField(null=True, blank=True)
    first_wrong_step = models.IntegerField(null=True, blank=True)
    corrected_step = models.TextField(blank=True)
    sentence_labels = models.JSONField(null=True, blank=True)
    shown_order = models.JSONField(null=True, blank=True)
    rationale = models.TextField(blank=True)
    time_spent_ms = models.PositiveIntegerField(null=True, blank=True)
    supersedes = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="superseded_by"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["task", "annotator"])]

    def __str__(self):
        return f"judgment {self.pk} on task {self.task_id}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise ValueError("Judgments are append-only: submit a new judgment that supersedes this one.")
        super().save(*args, **kwargs)


class ImportJob(Job):
    """A file upload being validated and imported by a worker (the row is the source of truth).

    While it waits for the manager to confirm its preview it is queued with ``report["stage"]`` =
    ``preview``; confirming it sends its task (``stage`` = ``queued``)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="imports")
    file = models.FileField(upload_to="imports/", max_length=300)
    original_name = models.CharField(max_length=300)
    detected_format = models.CharField(max_length=40, blank=True)
    rows_total = models.PositiveIntegerField(null=True, blank=True)
    rows_done = models.PositiveIntegerField(default=0)
    report = models.JSONField(default=dict, blank=True)

    def __str__(self):
        return f"import {self.pk} into {self.project_id}: {self.state}"

    @property
    def awaiting_broker(self) -> bool:
        return super().awaiting_broker and self.report.get("stage") == "queued"  # not a preview


class DatasetVersion(models.Model):
    """An immutable, frozen set of preference examples with the rule that built it."""

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    rule = models.JSONField()
    seed = models.IntegerField()
    test_fraction = models.FloatField()
    stats = models.JSONField(default=dict)
    content_hash = models.CharField(max_length=64)
    conversational = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project_id", "number"]
        constraints = [models.UniqueConstraint(fields=["project", "number"], name="version_number_unique")]

    def __str__(self):
        return f"{self.project} v{self.number}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise ValueError("Dataset versions are immutable: freeze a new version instead.")
        super().save(*args, **kwargs)


class DatasetExample(models.Model):
    """One frozen row of a dataset version, in the export's own shape."""

    version = models.ForeignKey(DatasetVersion, on_delete=models.CASCADE, related_name="examples")
    index = models.PositiveIntegerField()
    split = models.CharField(max_length=10, choices=Split.choices)
    row = models.JSONField(help_text="The export row: prompt, chosen, rejected and type-specific fields.")

    class Meta:
        ordering = ["version_id", "index"]
        constraints = [models.UniqueConstraint(fields=["version", "index"], name="example_index_unique")]

    def __str__(self):
        return f"example {self.index} of version {self.version_id}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise ValueError("Dataset examples are immutable.")
        super().save(*args, **kwargs)


class FreezeJob(Job):
    """A request to freeze a dataset version, run by a worker so a big project never blocks a page."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="freezes")
    rule = models.JSONField()
    seed = models.IntegerField()
    test_fraction = models.FloatField()
    stage = models.CharField(max_length=20, blank=True)
    stage_count = models.PositiveIntegerField(default=0)
    version = models.OneToOneField(
        DatasetVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="freeze_job"
    )

    def __str__(self):
        return f"freeze {self.pk} of {self.project_id}: {self.state}"
