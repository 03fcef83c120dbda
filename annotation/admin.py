from django.contrib import admin

from .models import (
    Asset,
    DatasetVersion,
    FreezeJob,
    ImportJob,
    Item,
    Judgment,
    Membership,
    Project,
    Task,
)
from .services.progress import project_progress_refresh


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "task_type", "overlap", "created_at"]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if change and "overlap" in form.changed_data:
            project_progress_refresh(project=obj)


class CountedAdmin(admin.ModelAdmin):
    """Deleting items or tasks here bypasses the services: recount the projects they belonged to."""

    def delete_model(self, request, obj):
        project = obj.project
        super().delete_model(request, obj)
        project_progress_refresh(project=project)

    def delete_queryset(self, request, queryset):
        projects = list(Project.objects.filter(pk__in=queryset.values("project_id")))
        super().delete_queryset(request, queryset)
        for project in projects:
            project_progress_refresh(project=project)


admin.site.register([Item, Task], CountedAdmin)
admin.site.register([Membership, Asset, ImportJob, FreezeJob])


@admin.register(Judgment)
class JudgmentAdmin(admin.ModelAdmin):
    list_display = ["id", "task", "annotator", "source", "choice", "strength", "created_at"]

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(DatasetVersion)
class DatasetVersionAdmin(admin.ModelAdmin):
    list_display = ["project", "number", "content_hash", "created_at"]

    def has_change_permission(self, request, obj=None):
        return False
