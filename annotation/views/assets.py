"""Serving uploaded images to the members of a project that uses them.

The file is looked up by its Asset's sha256 (a 64-hex path segment), never by a path taken from the
request; a user who is not a member of any project whose items or candidates show the asset gets a
404, as if it did not exist. MEDIA itself is not exposed by any URL.
"""

import re

from django.http import FileResponse, Http404
from django.views.decorators.http import require_GET

from ..models import Asset, Candidate, ItemImage, Membership

SHA256 = re.compile(r"[0-9a-f]{64}")
CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


def asset_visible_to(*, asset: Asset, user) -> bool:
    """True when the user belongs to a project whose items or candidates use the asset."""
    if user.is_superuser:
        return True
    projects = Membership.objects.filter(user=user).values("project_id")
    return (
        ItemImage.objects.filter(asset=asset, item__project__in=projects).exists()
        or Candidate.objects.filter(asset=asset, item__project__in=projects).exists()
    )


@require_GET
def asset_file(request, sha256):
    asset = Asset.objects.filter(sha256=sha256).first() if SHA256.fullmatch(sha256) else None
    if asset is None or not asset_visible_to(asset=asset, user=request.user):
        raise Http404("No such image.")
    try:
        handle = asset.file.open("rb")
    except (FileNotFoundError, ValueError):
        raise Http404("The image file is missing.") from None
    response = FileResponse(
        handle, content_type=CONTENT_TYPES.get(asset.format.upper(), "application/octet-stream")
    )
    response["Cache-Control"] = "private, max-age=86400, immutable"
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response
