"""Markdown to HTML that is safe to place in a page: model text and guidelines are untrusted.

Model text keeps raw HTML as visible text (a response that *talks about* ``<script>`` shows it);
guidelines may use a small set of tags. Both pass through nh3 (Ammonia) at the end.

Untrusted text never makes the browser fetch from another host (that would tell it who reads what, and
when): a markdown image whose address is not on this site (a path) or a ``data:image/`` URL becomes a link
to it, and an ``<img>`` written as HTML loses such a ``src``. The Content-Security-Policy
(``img-src 'self' data:``) would block the fetch anyway.
"""

import threading
from functools import lru_cache
from urllib.parse import urlsplit

import markdown
import nh3
from markdown.extensions import Extension
from markdown.treeprocessors import Treeprocessor

_ALLOWED_TAGS = {
    "a",
    "abbr",
    "b",
    "blockquote",
    "br",
    "code",
    "del",
    "em",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "i",
    "img",
    "li",
    "ol",
    "p",
    "pre",
    "span",
    "strong",
    "sub",
    "sup",
    "table",
    "tbody",
    "td",
    "th",
    "thead",
    "tr",
    "ul",
}
_ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title"},
    "code": {"class"},
    "span": {"class"},
}


_C0_AND_SPACE = "".join(chr(code) for code in range(0x21))


def is_local_image_url(url: str) -> bool:
    """A path on this site or a ``data:image/`` URL; anything with a host (``//x``, ``/\\x``) is remote."""
    # as a browser reads it: C0 controls and spaces trimmed, tabs and newlines dropped, "\\" taken as "/"
    cleaned = "".join(ch for ch in url if ch not in "\t\n\r").strip(_C0_AND_SPACE).replace("\\", "/")
    if cleaned.lower().startswith("data:image/"):
        return True
    parts = urlsplit(cleaned)
    return not parts.scheme and not parts.netloc and not cleaned.startswith("//")


class _RemoteImagesAsLinks(Treeprocessor):
    """``![alt](https://host/x.png)`` → a link to the image (plain text inside another link)."""

    def run(self, root):
        for parent in root.iter():
            for element in parent:
                if element.tag == "img" and not is_local_image_url(element.get("src", "")):
                    src, alt = element.get("src", ""), element.get("alt") or "image"
                    element.attrib.clear()
                    element.text = f"[image: {alt}]"
                    if parent.tag == "a":
                        element.tag = "span"
                    else:
                        element.tag = "a"
                        element.set("href", src)
                        element.set("title", f"Remote image, not loaded: {src}")


class _NoRemoteImages(Extension):
    def extendMarkdown(self, md):  # noqa: N802 (Python-Markdown's API name)
        md.treeprocessors.register(_RemoteImagesAsLinks(md), "remote_images", 15)  # after "inline" (20)


_EXTENSIONS = ["fenced_code", "tables", "sane_lists", _NoRemoteImages()]


def _keep_local_image_sources(element: str, attribute: str, value: str):
    if element == "img" and attribute == "src" and not is_local_image_url(value):
        return None
    if element == "a" and attribute == "href" and value.strip().lower().startswith("data:"):
        return None
    return value


class _EscapeRawHtml(Extension):
    """Treat raw HTML in the source as text instead of markup."""

    def extendMarkdown(self, md):  # noqa: N802 (Python-Markdown's API name)
        md.preprocessors.deregister("html_block")
        md.inlinePatterns.deregister("html")


def _sanitise(html: str) -> str:
    return nh3.clean(
        html,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto", "data"},
        attribute_filter=_keep_local_image_sources,
        link_rel="noopener noreferrer nofollow",
    )


CACHED_CHARS = 16_000
"""Texts up to this length are rendered once per process and kept (at most ``_CACHE_SIZE`` of them, least
recently used first out): the annotate screen shows the same guidelines and prompts on every request.
Longer texts render every time, so the cache stays a few megabytes whatever is imported."""
_CACHE_SIZE = 512


class _Converters(threading.local):
    """One Markdown converter per kind and thread (building one costs more than converting a short text);
    ``reset()`` before each use clears what the previous text left."""

    def __init__(self):
        self.guidelines = markdown.Markdown(extensions=_EXTENSIONS)
        self.model = markdown.Markdown(extensions=[*_EXTENSIONS, _EscapeRawHtml()])


_converters = _Converters()


def _render(kind: str, text: str) -> str:
    return _sanitise(getattr(_converters, kind).reset().convert(text))


_render_cached = lru_cache(maxsize=_CACHE_SIZE)(_render)


def _to_safe_html(kind: str, text: str) -> str:
    if not text:
        return ""
    return _render_cached(kind, text) if len(text) <= CACHED_CHARS else _render(kind, text)


def markdown_to_safe_html(text: str) -> str:
    """Guidelines: markdown with limited inline HTML, sanitised."""
    return _to_safe_html("guidelines", text)


def model_text_to_safe_html(text: str) -> str:
    """Model output: markdown (code blocks, lists, tables) where any raw HTML is shown as text."""
    return _to_safe_html("model", text)
