"""A job's page, polled by htmx until the job ends."""

from django.shortcuts import render
from django_htmx.http import HttpResponseStopPolling

STOP_POLLING = HttpResponseStopPolling.status_code  # htmx stops a polling element on this status


def job_page(request, template: str, fragment: str, context: dict, *, finished: bool):
    """The whole page, or for an htmx poll its ``fragment`` (a partial of ``template``), whose status
    tells htmx to stop polling once the job has ``finished``."""
    if not request.htmx:
        return render(request, template, context)
    response = render(request, f"{template}#{fragment}", context)
    if finished:
        response.status_code = STOP_POLLING
    return response
