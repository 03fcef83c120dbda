"""factory_boy factories for the annotation models."""

import hashlib

import factory
from django.contrib.auth import get_user_model

from annotation.models import Candidate, Item, Membership, Project, Role, Task, TaskType
from annotation.services.progress import progress_tasks_added

PASSWORD = "correct-horse-battery"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.org")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def save_password(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    name = factory.Sequence(lambda n: f"project {n}")
    task_type = TaskType.PAIRWISE
    overlap = 1
    guidelines = "Prefer the **helpful** and *honest* answer."


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    project = factory.SubFactory(ProjectFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.ANNOTATOR


class ItemFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Item

    project = factory.SubFactory(ProjectFactory)
    prompt = factory.Sequence(lambda n: f"Question number {n}: what is {n} + {n}?")
    content_hash = factory.LazyAttribute(lambda i: hashlib.sha256(i.prompt.encode()).hexdigest())
    source = "factory"


class CandidateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Candidate

    item = factory.SubFactory(ItemFactory)
    position = factory.Sequence(lambda n: n)
    text = factory.Sequence(lambda n: f"Answer text {n}")
    provenance = {"kind": "human"}


def pair_task(project: Project, *, prompt: str | None = None, texts=("Answer A", "Answer B")) -> Task:
    """An item with two candidates and the task that shows them as a pair."""
    item = ItemFactory(project=project, **({"prompt": prompt} if prompt else {}))
    candidates = [CandidateFactory(item=item, position=i, text=text) for i, text in enumerate(texts)]
    task = Task.objects.create(project=project, item=item, candidate_ids=[c.pk for c in candidates])
    progress_tasks_added(project_id=project.pk, count=1)  # as the services that create tasks do
    return task
