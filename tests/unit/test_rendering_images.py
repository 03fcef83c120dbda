"""Untrusted text never makes the browser load an image from another host (annotation/rendering.py)."""

import pytest

from annotation.rendering import is_local_image_url, markdown_to_safe_html, model_text_to_safe_html

RENDERERS = [markdown_to_safe_html, model_text_to_safe_html]
REMOTE = [
    "https://tracker.example/pixel.png?who=annotator",
    "http://tracker.example/p.gif",
    "//tracker.example/p.gif",
    "/\\tracker.example/p.gif",
    "\x01//tracker.example/p.gif",
    "HTTPS://tracker.example/p.gif",
]


@pytest.mark.parametrize("render", RENDERERS)
@pytest.mark.parametrize("url", REMOTE)
def test_a_remote_markdown_image_becomes_a_link_and_loads_nothing(render, url):
    html = render(f"See ![the chart]({url}) here.")
    assert "<img" not in html
    assert ">[image: the chart]</a>" in html


@pytest.mark.parametrize("render", RENDERERS)
def test_reference_style_and_linked_remote_images_load_nothing(render):
    html = render(
        "![r][1] and [![inner](https://t.example/i.png)](https://site.example/)\n\n[1]: https://t.example/r.png"
    )
    assert "<img" not in html
    assert 'href="https://t.example/r.png"' in html and "<span>[image: inner]</span>" in html


def test_a_raw_html_image_in_guidelines_loses_a_remote_source():
    html = markdown_to_safe_html('<img src="https://t.example/x.png" alt="x"> <img src="//t.example/y.png">')
    assert "t.example" not in html


@pytest.mark.parametrize("render", RENDERERS)
def test_same_site_and_data_images_still_show(render):
    html = render("![a](/media/assets/ab.png) ![b](data:image/png;base64,iVBORw0KGgo=)")
    assert '<img alt="a" src="/media/assets/ab.png">' in html
    assert 'src="data:image/png;base64,iVBORw0KGgo="' in html


def test_data_links_are_dropped_and_only_image_data_urls_count_as_local():
    assert 'href="data:' not in model_text_to_safe_html("[x](data:text/html,<b>hi</b>)")
    assert not is_local_image_url("data:text/html,hi")
    assert is_local_image_url("assets/ab.png")
