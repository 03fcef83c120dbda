import os
import shutil
import socket

import pytest

from tests.factories import MembershipFactory, ProjectFactory, UserFactory


def service_reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
HAVE_CHROMIUM = shutil.which(CHROMIUM) is not None or os.path.exists(CHROMIUM)


@pytest.fixture(autouse=True)
def _test_settings(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    # A real hasher costs ~0.3 s a user; tests are not about password strength.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def celery_eager():
    """Run .delay() calls inline, in this process (for view tests; real workers have their own tests)."""
    from prefstudio.celery import app

    previous = app.conf.task_always_eager, app.conf.task_eager_propagates
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield app
    app.conf.task_always_eager, app.conf.task_eager_propagates = previous


@pytest.fixture
def manager(db):
    return UserFactory(username="manager", is_staff=True)


@pytest.fixture
def annotator(db):
    return UserFactory(username="annotator")


@pytest.fixture
def project(manager):
    project = ProjectFactory()
    MembershipFactory(project=project, user=manager, role="manager")
    return project


@pytest.fixture
def manager_client(client, manager):
    client.force_login(manager)
    return client


@pytest.fixture
def annotator_client(client, annotator, project):
    MembershipFactory(project=project, user=annotator, role="annotator")
    client.force_login(annotator)
    return client
