"""A manager uploads a zip of Pick-a-Pic pairs: the preview, under the site's CSP, shows each pair's images as
thumbnails before anything is imported."""

import pytest

from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from tests.unit.import_samples import jsonl_bytes, png_bytes, write_zip

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_the_import_preview_shows_the_images_of_a_pair(page, live_server, login, tmp_path, screenshot_dir):
    user = UserFactory(username="importer")
    project = ProjectFactory(name="Pairs of pictures", task_type="image_pair")
    MembershipFactory(project=project, user=user, role="manager")
    rows = [
        {"caption": f"a {colour} square", "jpg_0": f"img/{colour}.png", "jpg_1": "img/grey.png"}
        for colour in ("red", "blue")
    ]
    files = {
        "img/red.png": png_bytes((220, 30, 30), size=(256, 256)),
        "img/blue.png": png_bytes((30, 30, 220), size=(256, 256)),
        "img/grey.png": png_bytes((128, 128, 128), size=(256, 256)),
    }
    archive = write_zip(tmp_path / "pairs.zip", "pairs.jsonl", jsonl_bytes(rows), files)
    login(page, user.username)
    page.goto(f"{live_server.url}/projects/{project.pk}/import/")
    page.set_input_files("input[type=file]", str(archive))
    page.click("#import-upload-form button[type=submit]")
    page.wait_for_url("**/import/*/")
    thumbs = page.locator("#import-preview img")
    assert thumbs.count() == 4
    page.wait_for_function(
        "() => [...document.querySelectorAll('#import-preview img')].every(i => i.complete && i.naturalWidth)"
    )
    assert [t.evaluate("i => i.naturalWidth") for t in thumbs.all()] == [160] * 4  # drawn, not blocked
    assert page.locator("#confirm-import").is_enabled()
    page.screenshot(path=str(screenshot_dir / "import_preview_thumbnails.png"), full_page=True)
