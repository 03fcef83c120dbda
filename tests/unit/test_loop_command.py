"""``manage.py loop``: start (queued, or run here with --run), show, list, cancel and resume."""
# ruff: noqa: F811 - ``registry`` is test_loops' fixture, imported to be requested by name

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from annotation.models import Membership
from jobs.models import JobState
from tests.unit.test_loops import TRAIN, registry  # noqa: F401
from training.models import Loop, LoopRound, LoopStage

SETTINGS = {"rounds": 1, "k": 3, "max_new_tokens": 8, "max_prompts": 6, "eval_prompts": 3, "train": TRAIN}


def _start(registry, *extra, **options) -> str:
    args = {
        "--project": registry["version"].project_id,
        "--prompt-version": registry["version"].number,
        "--start-model": registry["policy"].name,
        "--reward-model": registry["reward"].name,
        "--labeller": "reward_model",
        "--settings": json.dumps(SETTINGS),
        "--user": "manager",
        **options,
    }
    return ["start", *[str(part) for pair in args.items() for part in pair], *extra]


def _call(*args) -> str:
    out = StringIO()
    call_command("loop", *args, stdout=out)
    return out.getvalue()


def test_start_queues_a_loop_that_list_and_show_report(registry, manager):
    out = _call(*_start(registry, **{"--name": "cli loop"}))
    loop = Loop.objects.get()
    assert f"queued loop {loop.pk} (cli loop)" in out
    assert (loop.state, loop.created_by, loop.settings["rounds"]) == (JobState.QUEUED, manager, 1)
    listed = _call("list", "--project", str(loop.project_id))
    assert listed.splitlines()[0].split() == ["id", "project", "name", "labeller", "state", "stage", "round"]
    assert f"{loop.pk}" in listed.splitlines()[1] and "cli loop" in listed
    shown = _call("show", str(loop.pk)).splitlines()
    assert shown[0] == f"loop {loop.pk} (cli loop): queued, round 0, baseline"
    assert "start model tiny-llama, reward model tiny-rm" in shown[1]
    assert shown[2].split()[:2] == ["round", "stage"] and len(shown) == 3  # no rounds yet


def test_start_names_an_unknown_model(registry):
    with pytest.raises(CommandError, match=r"--start-model nope: no such model in the registry"):
        _call(*_start(registry, **{"--start-model": "nope"}))
    with pytest.raises(CommandError, match=r"--reward-model 999: no such model"):
        _call(*_start(registry, **{"--reward-model": "999"}))
    assert not Loop.objects.exists()


def test_start_reports_bad_input_by_name(registry, tmp_path, annotator):
    with pytest.raises(CommandError, match=r"start_model: tiny-rm is a .*, not a language model"):
        _call(*_start(registry, **{"--start-model": "tiny-rm"}))
    with pytest.raises(CommandError, match=r"invalid loop: rounds: rounds must be a whole number"):
        _call(*_start(registry, **{"--settings": json.dumps({**SETTINGS, "rounds": 0})}))
    with pytest.raises(CommandError, match=r"--settings: "):
        _call(*_start(registry, **{"--settings": "{rounds: 1"}))
    with pytest.raises(CommandError, match=r"--settings: "):
        _call(*_start(registry, **{"--settings": f"@{tmp_path / 'missing.json'}"}))
    with pytest.raises(CommandError, match=r"--prompt-version 9: project \d+ has no such version"):
        _call(*_start(registry, **{"--prompt-version": 9}))
    Membership.objects.create(project=registry["version"].project, user=annotator, role="annotator")
    with pytest.raises(CommandError, match=r"--user annotator is not a manager"):
        _call(*_start(registry, **{"--user": "annotator"}))
    assert not Loop.objects.exists()


def test_start_reads_settings_from_a_file(registry, tmp_path):
    path = tmp_path / "loop.json"
    path.write_text(json.dumps({**SETTINGS, "k": 5}))
    _call(*_start(registry, **{"--settings": f"@{path}"}))
    assert Loop.objects.get().settings["k"] == 5


def test_cancel_then_resume_and_a_second_resume_is_refused(registry):
    _call(*_start(registry))
    loop = Loop.objects.get()
    assert f"loop {loop.pk} (reward_model loop from tiny-llama): cancelled" in _call("cancel", str(loop.pk))
    assert ": queued," in _call("resume", str(loop.pk))
    with pytest.raises(CommandError, match=r"Only a cancelled or failed loop can be resumed"):
        _call("resume", str(loop.pk))
    with pytest.raises(CommandError, match=r"No loop 999"):
        _call("show", "999")


@pytest.mark.django_db(transaction=True)
def test_start_run_runs_one_round_here_and_show_tabulates_it(registry):
    out = _call(*_start(registry, "--run"))
    loop = Loop.objects.get()
    assert loop.state == JobState.SUCCEEDED, loop.traceback
    lines = out.splitlines()
    assert lines[0].startswith(f"queued loop {loop.pk}")
    assert any(", round 0, baseline" in line for line in lines)
    assert lines[-1].endswith("succeeded, round 1, done; stopped: ran 1 round")
    one = LoopRound.objects.get(loop=loop)
    assert one.stage == LoopStage.DONE and one.trained_model is not None
    table = _call("show", str(loop.pk)).splitlines()[2:]
    assert [row.split()[:2] for row in table] == [["round", "stage"], ["0", "baseline"], ["1", "done"]]
    cells = table[2].split()
    assert cells[2] == str(one.labelling["pairs"]) and cells[4] == f"{one.evaluation['win_rate']:.3f}"
