from django.apps import AppConfig


class PrefstudioConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "prefstudio"
