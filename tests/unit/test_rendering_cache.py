"""Rendered markdown is kept per process for short texts: the annotate screen repeats the same ones."""

import markdown

from annotation import rendering
from annotation.rendering import markdown_to_safe_html, model_text_to_safe_html


def _counting_convert(monkeypatch) -> list:
    calls, real = [], markdown.Markdown.convert

    def convert(self, text):
        calls.append(text)
        return real(self, text)

    monkeypatch.setattr(markdown.Markdown, "convert", convert)
    return calls


def test_the_same_text_is_converted_once_and_stays_escaped(monkeypatch):
    calls = _counting_convert(monkeypatch)
    text = "cache-probe **bold** <script>alert(1)</script>"
    first, second = model_text_to_safe_html(text), model_text_to_safe_html(text)
    assert first == second and "<script>" not in first and "&lt;script&gt;" in first
    assert calls.count(text) == 1
    assert "<script>" not in markdown_to_safe_html(text)  # guidelines are cached apart from model text
    assert calls.count(text) == 2


def test_a_text_longer_than_the_cache_limit_is_converted_every_time(monkeypatch):
    calls = _counting_convert(monkeypatch)
    text = "long-probe " + "x" * rendering.CACHED_CHARS
    assert model_text_to_safe_html(text) == model_text_to_safe_html(text)
    assert calls.count(text) == 2
