"""``manage.py import_preferences``: detected format, counts, and a non-zero exit with the error report."""

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from annotation.management.commands.import_preferences import Command
from annotation.models import Item, Membership, Project
from tests.factories import MembershipFactory, ProjectFactory, UserFactory

from .import_samples import trl_rows, write_rows

pytestmark = pytest.mark.django_db


def run(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("import_preferences", *args, "--no-progress", stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_import_command_creates_project_and_prints_counts(tmp_path):
    path = write_rows(tmp_path / "prefs.jsonl", trl_rows(25))
    out, _ = run(str(path), "--project", "Fresh", "--create", "--task-type", "pairwise")
    assert "Detected format: TRL preference, standard, explicit prompt (JSONL)" in out
    assert "Imported 25 items, 50 candidates, 25 judgments into project 'Fresh'" in out
    project = Project.objects.get(name="Fresh")
    assert project.task_type == "pairwise"
    assert Item.objects.filter(project=project).count() == 25


def test_import_command_draws_a_progress_bar_on_stderr(tmp_path):
    ProjectFactory(name="Bars", task_type="pairwise")
    path = write_rows(tmp_path / "prefs.csv", trl_rows(10))
    err = io.StringIO()
    call_command("import_preferences", str(path), "--project", "Bars", stdout=io.StringIO(), stderr=err)
    assert "validating" in err.getvalue() and "10/10" in err.getvalue()
    assert "writing" in err.getvalue()


def test_import_command_prints_every_bad_line_and_exits_non_zero(tmp_path, capsys, monkeypatch):
    # run_from_argv closes every connection when it ends; the test database must stay open.
    monkeypatch.setattr("django.core.management.base.connections.close_all", lambda: None)
    ProjectFactory(name="Strict", task_type="pairwise")
    rows = [*trl_rows(3), {"prompt": "q", "chosen": "", "rejected": "b"}, {"prompt": "q2", "rejected": "b"}]
    path = write_rows(tmp_path / "bad.jsonl", rows)
    with pytest.raises(SystemExit) as exited:
        Command().run_from_argv(
            ["manage.py", "import_preferences", str(path), "--project", "Strict", "--no-progress"]
        )
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert "Nothing was imported: 2 problem(s) found." in err
    assert "line 4: chosen: is an empty string" in err
    assert "line 5: chosen: is missing" in err
    assert not Item.objects.exists()


def test_import_command_refuses_a_missing_project_without_create(tmp_path):
    path = write_rows(tmp_path / "prefs.jsonl", trl_rows(1))
    with pytest.raises(CommandError, match="No project named 'Nope'"):
        run(str(path), "--project", "Nope")
    with pytest.raises(CommandError, match="--create needs --task-type"):
        run(str(path), "--project", "Nope", "--create")


def test_import_command_reports_a_task_type_mismatch(tmp_path):
    ProjectFactory(name="Ranks", task_type="ranking")
    path = write_rows(tmp_path / "prefs.jsonl", trl_rows(1))
    with pytest.raises(
        CommandError, match="need a project of type pairwise; project 'Ranks' has type ranking"
    ):
        run(str(path), "--project", "Ranks")


def test_import_command_format_option_overrides_detection(tmp_path):
    ProjectFactory(name="Ranked", task_type="ranking")
    rows = [{"prompt": "Pick", "responses": ["a", "b", "c"], "chosen": "ignored"}]
    path = write_rows(tmp_path / "r.jsonl", rows)
    out, _ = run(str(path), "--project", "Ranked", "--format", "responses")
    assert "Prompt with a responses list" in out
    assert "Imported 1 items, 3 candidates, 0 judgments" in out


def test_import_command_create_with_manager_makes_the_project_reachable(tmp_path):
    UserFactory(username="lead")
    path = write_rows(tmp_path / "prefs.jsonl", trl_rows(2))
    out, err = run(str(path), "--project", "Led", "--create", "--task-type", "pairwise", "--manager", "lead")
    assert "Project 'Led' created; lead manages it." in out
    assert "no members" not in err
    membership = Membership.objects.get(project__name="Led")
    assert (membership.user.username, membership.role) == ("lead", "manager")


def test_import_command_create_without_manager_warns_how_to_add_one(tmp_path):
    path = write_rows(tmp_path / "prefs.jsonl", trl_rows(2))
    _, err = run(str(path), "--project", "Orphan", "--create", "--task-type", "pairwise")
    project = Project.objects.get(name="Orphan")
    assert "Project 'Orphan' was created with no members" in err
    assert "--manager USERNAME" in err
    assert f"/projects/{project.pk}/settings/" in err and "/admin/annotation/membership/add/" in err
    assert not project.memberships.exists()


def test_import_command_refuses_an_unknown_manager_before_creating_anything(tmp_path):
    path = write_rows(tmp_path / "prefs.jsonl", trl_rows(2))
    with pytest.raises(CommandError, match="No user named 'ghost' for --manager"):
        run(str(path), "--project", "Never", "--create", "--task-type", "pairwise", "--manager", "ghost")
    assert not Project.objects.filter(name="Never").exists()


def test_import_command_manager_on_an_existing_project_promotes_the_member(tmp_path):
    project = ProjectFactory(name="Kept", task_type="pairwise")
    MembershipFactory(project=project, user=UserFactory(username="lead"), role="annotator")
    path = write_rows(tmp_path / "prefs.jsonl", trl_rows(1))
    out, err = run(str(path), "--project", "Kept", "--manager", "lead")
    assert "lead manages project 'Kept'." in out and "no members" not in err
    assert project.memberships.get().role == "manager"
