"""The annotate screen's hot path (next panel, submit) stays within a fixed query budget."""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests.factories import pair_task

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}
ASSIGNMENT = re.compile(r'data-assignment-id="(\d+)"')
CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def _queries(client, method, path, **kwargs):
    with CaptureQueriesContext(connection) as captured:
        response = getattr(client, method)(path, **kwargs)
    assert response.status_code == 200
    for query in captured.captured_queries:
        print(query["sql"][:160])
    return response, len(captured)


def test_next_panel_and_submit_stay_within_their_query_budgets(annotator_client, project):
    for _ in range(3):
        pair_task(project)
    next_url = reverse("annotate-next", args=[project.pk])
    annotator_client.get(next_url, **HTMX)  # the first request creates the session's rows
    response, next_queries = _queries(annotator_client, "get", next_url, **HTMX)
    html = response.content.decode()
    submit_url = reverse("annotate-submit", args=[project.pk, ASSIGNMENT.search(html).group(1)])
    form = {"choice": "left", "strength": "2", "rationale": "", "time_spent_ms": "1200"}
    _, submit_queries = _queries(annotator_client, "post", submit_url, data=form, **HTMX)
    print(f"next: {next_queries} queries, submit: {submit_queries} queries")
    # next: session, user, project with the user's role, the resumed assignment with its task and item,
    # both progress counters in one statement (+ the annotator's first recount), the candidates
    assert next_queries <= 7
    # submit: the same lookups; under the task and assignment locks the judgment, the assignment, the
    # task's completion and the counters (one plain UPDATE each, no read of the task's assignments);
    # then the next task's pick (plain SQL), its slot recount, its item and the hold
    assert submit_queries <= 27
