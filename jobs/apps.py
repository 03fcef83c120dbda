from django.apps import AppConfig


class JobsConfig(AppConfig):
    """The job core: the abstract job model, leases and recovery every background job shares."""

    name = "jobs"
    default_auto_field = "django.db.models.BigAutoField"
