"""``manage.py loop``: start, show, list, cancel and resume online loops (``training/services/loops.py``).

    loop start --project ID --prompt-version N --start-model NAME --reward-model NAME
               --labeller reward_model|rso|cream|people [--name NAME] [--settings JSON|@FILE]
               [--user USERNAME] [--run]
    loop show ID
    loop list [--project ID]
    loop cancel ID
    loop resume ID [--run]

Without ``--run`` a loop is queued for a worker; with it, it runs in this process (``loop_run``), a line
per stage, and Ctrl-C cancels it.
"""

import json
import threading
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.http import Http404

from annotation.access import project_for
from annotation.models import DatasetVersion, Project
from jobs.models import JobState
from training.models import Labeller, Loop, ModelEntry
from training.selectors import loops_for_project
from training.services.loops import loop_cancel, loop_create, loop_resume, loop_run

POLL_SECONDS = 0.5
"""How often ``--run`` looks at the loop's row for a new stage."""
COLUMNS = ("round", "stage", "pairs", "held-out score", "win rate", "KL", "length")


def _problems(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
    return " ".join(exc.messages)


def _project(ref: str) -> Project:
    found = Project.objects.filter(pk=int(ref)) if ref.isdigit() else Project.objects.filter(name=ref)
    if not found.exists():
        raise CommandError(f"--project {ref}: no such project")
    return found.get()


def _model(option: str, ref: str) -> ModelEntry:
    found = ModelEntry.objects.filter(pk=int(ref)) if ref.isdigit() else ModelEntry.objects.filter(name=ref)
    if not found.exists():
        raise CommandError(
            f"{option} {ref}: no such model in the registry (manage.py register_model adds one)"
        )
    return found.get()


def _settings(value: str | None) -> dict:
    """``--settings``: a JSON object, or ``@path`` to a file holding one."""
    if not value:
        return {}
    try:
        text = Path(value[1:]).read_text(encoding="utf-8") if value.startswith("@") else value
        settings = json.loads(text)
    except (OSError, ValueError) as exc:
        raise CommandError(f"--settings: {exc}") from exc
    if not isinstance(settings, dict) or not isinstance(settings.get("train") or {}, dict):
        raise CommandError("--settings: expected a JSON object (its train, if given, an object too)")
    return settings


def _user(username: str | None, project: Project):
    """``--user`` (a manager of the project), or the first superuser."""
    users = get_user_model().objects.order_by("pk")
    user = users.filter(username=username).first() if username else users.filter(is_superuser=True).first()
    if user is None:
        raise CommandError(
            f"--user {username}: no such user" if username else "No superuser to start it as: pass --user."
        )
    try:
        project_for(user=user, project_id=project.pk, manager=True)
    except (Http404, PermissionDenied) as exc:
        raise CommandError(f"--user {user.username} is not a manager of project {project.pk}") from exc
    return user


def _loop(loop_id: int) -> Loop:
    loop = Loop.objects.select_related("project", "start_model", "reward_model").filter(pk=loop_id).first()
    if loop is None:
        raise CommandError(f"No loop {loop_id}.")
    return loop


def _figure(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _table(rows: list[tuple]) -> list[str]:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows
    ]


def _rounds_table(loop: Loop) -> list[str]:
    """Round 0 is the starting policy's baseline; then each round's pairs and held-out figures."""
    rows = [COLUMNS]
    if baseline := (loop.result or {}).get("baseline"):
        rows.append(("0", "baseline", "-", *_figures(baseline)))
    for one in loop.rounds.order_by("number"):
        pairs = (one.labelling or {}).get("pairs")
        rows.append((str(one.number), one.stage, _figure(pairs), *_figures(one.evaluation or {})))
    return _table(rows)


def _figures(evaluation: dict) -> tuple[str, ...]:
    keys = ("mean_score", "win_rate", "mean_kl", "mean_length")
    return tuple(_figure(evaluation.get(key)) for key in keys)


def _status(loop: Loop) -> str:
    line = f"loop {loop.pk} ({loop.name}): {loop.state}, round {loop.round_number}, {loop.stage}"
    if loop.progress_total and not loop.finished:
        line += f" ({loop.progress_done}/{loop.progress_total})"
    if stopped := (loop.result or {}).get("stopped"):
        line += f"; stopped: {stopped}"
    return line + (f"; {loop.error}" if loop.error else "")


def _run_here(loop_id: int) -> None:
    try:
        loop_run(loop_id=loop_id)
    finally:
        connection.close()  # this thread's own connection


class Command(BaseCommand):
    help = "Start, show, list, cancel and resume online loops (rounds of generate, label, train, evaluate)."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        start = actions.add_parser("start", help="queue a loop (--run: run it here)")
        start.add_argument("--project", required=True, help="project id (or name)")
        start.add_argument(
            "--prompt-version", type=int, required=True, help="dataset version number within the project"
        )
        start.add_argument(
            "--start-model", required=True, help="language model name (or id): the first policy"
        )
        start.add_argument(
            "--reward-model", required=True, help="reward model name (or id): labels every round"
        )
        start.add_argument("--labeller", required=True, choices=Labeller.values)
        start.add_argument("--name", help="default: the labeller and the starting model")
        start.add_argument(
            "--settings", help='loop settings as JSON ({"rounds": 3, "train": {...}}) or @file'
        )
        start.add_argument("--user", help="who starts it, a project manager (default: the first superuser)")
        start.add_argument("--run", action="store_true", help="run it in this process, a line per stage")
        actions.add_parser("show", help="a loop's state and rounds").add_argument("loop_id", type=int)
        listing = actions.add_parser("list", help="loops, newest first")
        listing.add_argument("--project", help="only this project's (id or name)")
        actions.add_parser("cancel", help="stop a loop").add_argument("loop_id", type=int)
        resume = actions.add_parser("resume", help="queue a cancelled or failed loop again")
        resume.add_argument("loop_id", type=int)
        resume.add_argument("--run", action="store_true", help="run it in this process, a line per stage")

    def handle(self, *args, action, **opts):
        getattr(self, f"_{action}")(**opts)

    def _start(self, *, project, prompt_version, start_model, reward_model, labeller, **opts):
        found = _project(project)
        version = DatasetVersion.objects.filter(project=found, number=prompt_version).first()
        if version is None:
            raise CommandError(f"--prompt-version {prompt_version}: project {found.pk} has no such version")
        start = _model("--start-model", start_model)
        try:
            loop = loop_create(
                name=opts["name"] or f"{labeller} loop from {start.name}",
                prompt_version=version,
                start_model=start,
                reward_model=_model("--reward-model", reward_model),
                labeller=labeller,
                settings=_settings(opts["settings"]),
                created_by=_user(opts["user"], found),
            )
        except ValidationError as exc:
            raise CommandError(f"invalid loop: {_problems(exc)}") from exc
        self.stdout.write(f"queued loop {loop.pk} ({loop.name}) in project {found.pk}")
        if opts["run"]:
            self._follow(loop)

    def _show(self, *, loop_id, **opts):
        loop = _loop(loop_id)
        self.stdout.write(_status(loop))
        reward = loop.reward_model.name if loop.reward_model else "-"
        models = f"start model {loop.start_model.name}, reward model {reward}"
        self.stdout.write(f"project {loop.project_id}, labeller {loop.labeller}, {models}")
        for line in _rounds_table(loop):
            self.stdout.write(line)

    def _list(self, *, project, **opts):
        loops = loops_for_project(project=_project(project)) if project else Loop.objects.order_by("-id")
        rows = [("id", "project", "name", "labeller", "state", "stage", "round")]
        rows += [
            (
                str(one.pk),
                str(one.project_id),
                one.name,
                one.labeller,
                one.state,
                one.stage,
                str(one.round_number),
            )
            for one in loops
        ]
        for line in _table(rows) if len(rows) > 1 else ["no loops"]:
            self.stdout.write(line)

    def _cancel(self, *, loop_id, **opts):
        self.stdout.write(_status(loop_cancel(loop=_loop(loop_id))))

    def _resume(self, *, loop_id, run, **opts):
        try:
            loop = loop_resume(loop=_loop(loop_id))
        except ValidationError as exc:
            raise CommandError(f"loop {loop_id}: {_problems(exc)}") from exc
        self.stdout.write(_status(loop))
        if run:
            self._follow(loop)

    def _follow(self, loop: Loop) -> None:
        """Run the loop in a thread of this process, a line each time its state, round or stage changes."""
        worker = threading.Thread(target=_run_here, args=(loop.pk,), name=f"loop-{loop.pk}", daemon=True)
        worker.start()
        last = None
        while True:
            alive = worker.is_alive()  # read before the row: the last look sees what the thread left
            loop.refresh_from_db()
            if (now := (loop.state, loop.round_number, loop.stage)) != last:
                self.stdout.write(_status(loop))
                last = now
            if not alive:
                break
            try:
                worker.join(POLL_SECONDS)
            except KeyboardInterrupt:
                self.stdout.write(f"cancelling loop {loop.pk}…")
                loop_cancel(loop=loop)
        if loop.state == JobState.RUNNING:
            self.stdout.write(
                f"loop {loop.pk} runs in a worker: follow it with manage.py loop show {loop.pk}"
            )
        elif loop.state != JobState.SUCCEEDED:
            raise CommandError(f"loop {loop.pk} {loop.state}: {loop.error}")
