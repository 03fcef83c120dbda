"""Training and generation jobs, metrics and artifacts, and the model registry (docs/architecture.md)."""

from django.conf import settings
from django.db import models

from jobs.models import Job


class ModelKind(models.TextChoices):
    CAUSAL_LM = "causal_lm", "Causal LM"
    REWARD_MODEL = "reward_model", "Reward model"
    DIFFUSION = "diffusion", "Diffusion UNet/pipeline"


class Location(models.TextChoices):
    BUNDLED = "bundled", "Bundled"
    LOCAL = "local", "Local folder"
    HUB = "hub", "Hub id"
    JOB = "job", "Produced by a job"


class ModelEntry(models.Model):
    """A base or trained model the engine can load (its ``spec`` is the engine's model string)."""

    kind = models.CharField(max_length=20, choices=ModelKind.choices, default=ModelKind.CAUSAL_LM)
    name = models.CharField(max_length=200, unique=True)
    location = models.CharField(max_length=10, choices=Location.choices)
    path = models.CharField(max_length=500, help_text="Bundled name, folder path or hub id.")
    is_adapter = models.BooleanField(default=False, help_text="A LoRA adapter rather than full weights.")
    base = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="derived")
    project = models.ForeignKey(
        "annotation.Project",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="models",
        help_text="The project of the job that produced it; empty for bundled and admin-registered models.",
    )
    produced_by = models.OneToOneField(
        "TrainingJob", null=True, blank=True, on_delete=models.SET_NULL, related_name="produced_model"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "model entries"

    def __str__(self):
        return self.name

    @property
    def spec(self) -> str:
        """The engine's model spec string (``bundled:…``, ``local:…``, ``hub:…``)."""
        if self.location == Location.BUNDLED:
            return f"bundled:{self.path}"
        if self.location == Location.HUB:
            return f"hub:{self.path}"
        return f"local:{self.path}"


class Queue(models.TextChoices):
    CPU = "cpu", "cpu"
    GPU = "gpu", "gpu"
    SLURM = "slurm", "slurm (run by its sbatch script, reporting over the API)"


class TrainingJob(Job):
    """One training run: the database row is the source of truth for its state."""

    method = models.CharField(max_length=30)
    config = models.JSONField(help_text="engine config_to_dict(); paths are filled in by the worker.")
    base_model = models.ForeignKey(ModelEntry, on_delete=models.PROTECT, related_name="jobs")
    dataset_version = models.ForeignKey(
        "annotation.DatasetVersion", on_delete=models.PROTECT, related_name="training_jobs"
    )
    heldout_split = models.CharField(max_length=10, default="test")
    queue = models.CharField(max_length=10, choices=Queue.choices, default=Queue.CPU)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(null=True, blank=True)
    stage = models.CharField(
        max_length=20, blank=True, help_text="What the attempt is doing (services/runner.py STAGES)."
    )
    stage_done = models.PositiveIntegerField(default=0)
    stage_total = models.PositiveIntegerField(default=0)
    stage_history = models.JSONField(
        default=list,
        blank=True,
        help_text="The stages its attempts went through: stage, attempt, start, n of N.",
    )
    eval_generations = models.PositiveSmallIntegerField(
        default=4, help_text="Held-out prompts the base and trained models answer after training (0: none)."
    )
    started_step = models.PositiveIntegerField(default=0, help_text="Step this attempt started from (ETA).")
    running_since = models.DateTimeField(null=True, blank=True, help_text="When this attempt started.")
    cancel_requested = models.BooleanField(default=False)
    resume_from = models.CharField(max_length=500, blank=True, help_text="Checkpoint this attempt resumes.")
    run_token = models.CharField(
        max_length=32,
        unique=True,
        null=True,
        blank=True,
        editable=False,
        help_text="Names its output folder.",
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state", "heartbeat_at"], name="job_state_heartbeat")]

    def __str__(self):
        return f"job {self.pk} ({self.method})"

    @property
    def awaiting_broker(self) -> bool:
        return super().awaiting_broker and not self.cancel_requested


class GenerationKind(models.TextChoices):
    CANDIDATES = "candidates", "Candidate generation"
    STEP_PIPELINE = "step_pipeline", "Automatic step checking"
    IMAGE_PAIRS = "image_pairs", "Image-pair generation"
    REWARD_SCORES = "reward_scores", "Reward-model scoring"
    REWARD_COMPARISON = "reward_comparison", "DPO vs reward model under shift"
    POLICY_COMPARISON = "policy_comparison", "PPO vs DPO on held-out prompts"
    TRY_IT = "try_it", "Try it: the base and trained models answer a prompt"


class GenerationJob(Job):
    """A model sampling candidates or Step-DPO continuations for a project; the row is the source of truth."""

    project = models.ForeignKey(
        "annotation.Project", on_delete=models.CASCADE, related_name="generation_jobs"
    )
    kind = models.CharField(max_length=20, choices=GenerationKind.choices, default=GenerationKind.CANDIDATES)
    model = models.ForeignKey(ModelEntry, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    model_spec = models.CharField(max_length=500, help_text="The engine's model spec used for sampling.")
    options = models.JSONField(default=dict, help_text="k, temperature, top_p, max_new_tokens, seed.")
    stage = models.CharField(
        max_length=20,
        blank=True,
        db_default="",  # rows written by SQL (migration 0003's adoption of the old table) have none
        help_text="loading (the model) or running (services/generation.py).",
    )
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    result = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"{self.kind} job {self.pk} for {self.project_id}: {self.state}"


class CandidateScore(models.Model):
    """A reward model's score of one candidate, with its provenance; scoring again with the same model
    replaces the row (one score per candidate and model)."""

    candidate = models.ForeignKey("annotation.Candidate", on_delete=models.CASCADE, related_name="scores")
    model = models.ForeignKey(ModelEntry, on_delete=models.CASCADE, related_name="candidate_scores")
    score = models.FloatField()
    model_name = models.CharField(max_length=200, help_text="The entry's name when it scored.")
    model_spec = models.CharField(max_length=500, help_text="The engine's model spec when it scored.")
    job = models.ForeignKey(
        GenerationJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="candidate_scores"
    )
    scored_at = models.DateTimeField()
    scored_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["candidate_id", "model_id"]
        constraints = [models.UniqueConstraint(fields=["candidate", "model"], name="candidate_score_model")]

    def __str__(self):
        return f"{self.model_name}: {self.score:.4f} for candidate {self.candidate_id}"


class RewardComparison(models.Model):
    """A finished DPO-family job's implicit reward and a reward model, compared on one dataset version's
    held-out rows cut by a shift rule into in-distribution and shifted (Lin et al.'s DPORM vs EXRM).
    Computed by a ``GenerationJob`` of kind ``reward_comparison``; ``provenance`` keeps the specs, names
    and settings used, ``result`` the per-split accuracies (``services/reward_comparison.py``)."""

    job = models.OneToOneField(GenerationJob, on_delete=models.CASCADE, related_name="reward_comparison")
    dataset_version = models.ForeignKey(
        "annotation.DatasetVersion", on_delete=models.PROTECT, related_name="reward_comparisons"
    )
    heldout_split = models.CharField(max_length=10, default="test")
    policy_job = models.ForeignKey(TrainingJob, on_delete=models.PROTECT, related_name="reward_comparisons")
    reward_model = models.ForeignKey(ModelEntry, on_delete=models.PROTECT, related_name="reward_comparisons")
    rule = models.JSONField(help_text="The shift rule (engine ShiftRule.to_dict()).")
    beta = models.FloatField(help_text="The DPO job's β: the implicit reward's temperature.")
    provenance = models.JSONField(default=dict, help_text="Model specs, names and max lengths used.")
    result = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"reward comparison {self.pk} on {self.dataset_version_id}"


class PolicyComparison(models.Model):
    """A finished DPO-family job and a finished PPO-family job of one dataset version, and their common base
    model, compared on the version's held-out prompts: greedy responses scored by a reward model, with win
    rates against the base and KL to it ("Unpacking DPO and PPO").  Computed by a ``GenerationJob`` of kind
    ``policy_comparison``; ``provenance`` keeps the specs, names and settings used, ``result`` the
    engine's summary and example rows (``services/policy_comparison.py``)."""

    job = models.OneToOneField(GenerationJob, on_delete=models.CASCADE, related_name="policy_comparison")
    dataset_version = models.ForeignKey(
        "annotation.DatasetVersion", on_delete=models.PROTECT, related_name="policy_comparisons"
    )
    heldout_split = models.CharField(max_length=10, default="test")
    dpo_job = models.ForeignKey(TrainingJob, on_delete=models.PROTECT, related_name="+")
    ppo_job = models.ForeignKey(TrainingJob, on_delete=models.PROTECT, related_name="+")
    reward_model = models.ForeignKey(ModelEntry, on_delete=models.PROTECT, related_name="policy_comparisons")
    provenance = models.JSONField(default=dict, help_text="Model specs and names, generation settings used.")
    result = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"policy comparison {self.pk} on {self.dataset_version_id}"


class MetricPoint(models.Model):
    """One value of one metric at one optimizer step; a step is never stored twice."""

    job = models.ForeignKey(TrainingJob, on_delete=models.CASCADE, related_name="metric_points")
    step = models.PositiveIntegerField()
    name = models.CharField(max_length=80)
    value = models.FloatField(null=True)
    wall_time = models.FloatField(help_text="Seconds since the epoch when the value was reported.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "name", "step"], name="metric_job_name_step")]
        indexes = [models.Index(fields=["job", "step"], name="metric_job_step")]

    def __str__(self):
        return f"{self.name}@{self.step}={self.value}"


class ArtifactKind(models.TextChoices):
    CHECKPOINT = "checkpoint", "Checkpoint"
    ADAPTER = "adapter", "Adapter"
    MODEL = "model", "Final model"
    EVAL_REPORT = "eval_report", "Eval report"
    SAMPLES = "samples", "Sample generations"
    METRICS = "metrics", "Metrics file"
    CONFIG = "config", "Config"


class Artifact(models.Model):
    """A file or folder a job produced, relative to ARTIFACT_ROOT."""

    job = models.ForeignKey(TrainingJob, on_delete=models.CASCADE, related_name="artifacts")
    kind = models.CharField(max_length=20, choices=ArtifactKind.choices)
    path = models.CharField(max_length=500, help_text="Relative to ARTIFACT_ROOT.")
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job_id", "path"]
        constraints = [models.UniqueConstraint(fields=["job", "path"], name="artifact_job_path")]

    def __str__(self):
        return self.path


class Labeller(models.TextChoices):
    REWARD_MODEL = "reward_model", "Reward model (best vs worst, or every pair above a score gap)"
    RSO = "rso", "RSO: statistical rejection sampling, pairs labelled by a reward model"
    PEOPLE = "people", "People: annotators judge each round's samples in the usual screens"
    CREAM = "cream", "CREAM: the policy ranks its own samples, weighed by its consistency with the last round"


class LoopStage(models.TextChoices):
    BASELINE = "baseline", "Evaluating the starting policy"
    GENERATE = "generate", "Sampling and scoring candidates"
    LABEL = "label", "Pairing the candidates"
    FREEZE = "freeze", "Freezing the round's dataset version"
    TRAIN = "train", "Training"
    EVALUATE = "evaluate", "Evaluating on held-out prompts"
    DONE = "done", "Done"


class Loop(Job):
    """An online alignment loop: rounds of generate → label → freeze → train → evaluate, the trained model
    becoming the next round's policy (``services/loops.py``).  The row is the source of truth; its rounds
    are ``LoopRound`` rows, each stage's outcome recorded before the next starts, so a new attempt resumes
    the loop where the last one stopped."""

    name = models.CharField(max_length=200)
    project = models.ForeignKey("annotation.Project", on_delete=models.CASCADE, related_name="loops")
    prompt_version = models.ForeignKey(
        "annotation.DatasetVersion",
        on_delete=models.PROTECT,
        related_name="loops",
        help_text="Its training prompts are sampled each round; its held-out prompts evaluate each round.",
    )
    start_model = models.ForeignKey(ModelEntry, on_delete=models.PROTECT, related_name="loops_started")
    reward_model = models.ForeignKey(
        ModelEntry, null=True, blank=True, on_delete=models.PROTECT, related_name="loops_judged"
    )
    labeller = models.CharField(max_length=20, choices=Labeller.choices)
    settings = models.JSONField(help_text="services/loops.LoopSettings as a dict.")
    stage = models.CharField(max_length=20, choices=LoopStage.choices, default=LoopStage.BASELINE)
    round_number = models.PositiveIntegerField(default=0, help_text="The round in progress (0: baseline).")
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)
    result = models.JSONField(
        default=dict, blank=True, help_text="The baseline evaluation and why it stopped."
    )
    run_token = models.CharField(max_length=32, unique=True, editable=False, help_text="Names its folder.")

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"loop {self.pk} ({self.name})"

    @property
    def awaiting_broker(self) -> bool:
        return super().awaiting_broker and not self.cancel_requested


class LoopRound(models.Model):
    """One round of a loop: the policy it sampled from, the version it froze, the job that trained on it and
    the model that job registered, and its figures (pairing and held-out evaluation)."""

    loop = models.ForeignKey(Loop, on_delete=models.CASCADE, related_name="rounds")
    number = models.PositiveIntegerField()
    stage = models.CharField(max_length=20, choices=LoopStage.choices, default=LoopStage.GENERATE)
    policy = models.ForeignKey(ModelEntry, on_delete=models.PROTECT, related_name="+")
    dataset_version = models.OneToOneField(
        "annotation.DatasetVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="loop_round",
    )
    training_job = models.OneToOneField(
        TrainingJob, null=True, blank=True, on_delete=models.PROTECT, related_name="loop_round"
    )
    trained_model = models.ForeignKey(
        ModelEntry, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    labelling = models.JSONField(default=dict, blank=True, help_text="Pairs made, acceptance rates, spreads.")
    evaluation = models.JSONField(default=dict, blank=True, help_text="Held-out score, win rate, KL, length.")
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["loop_id", "number"]
        constraints = [models.UniqueConstraint(fields=["loop", "number"], name="loop_round_number")]

    def __str__(self):
        return f"round {self.number} of loop {self.loop_id}"


class DomainStream(Job):
    """Preference training across domains (``services/domain_streams.py``): a project's dataset versions as
    domains in order, trained by sequential DPO, OFS and COFS from one base model, each method's forgetting
    matrix (every domain's held-out accuracy after each domain) recorded in ``result``."""

    name = models.CharField(max_length=200)
    project = models.ForeignKey("annotation.Project", on_delete=models.CASCADE, related_name="domain_streams")
    base_model = models.ForeignKey(ModelEntry, on_delete=models.PROTECT, related_name="domain_streams")
    versions = models.JSONField(help_text="The domains' dataset version ids, in training order.")
    settings = models.JSONField(help_text="engine cross_domain.CrossDomainSettings fields, less the model.")
    method = models.CharField(max_length=20, blank=True, help_text="The method training now.")
    domain = models.CharField(max_length=40, blank=True, help_text="The domain training now.")
    progress_done = models.PositiveIntegerField(default=0, help_text="Stages started (method × domain).")
    progress_total = models.PositiveIntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)
    result = models.JSONField(default=dict, blank=True, help_text="Each method's forgetting matrix.")
    run_token = models.CharField(max_length=32, unique=True, editable=False, help_text="Names its folder.")

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"domain stream {self.pk} ({self.name})"

    @property
    def awaiting_broker(self) -> bool:
        return super().awaiting_broker and not self.cancel_requested
