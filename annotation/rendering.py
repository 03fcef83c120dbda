"""Markdown to HTML that is safe to place in a page: model text and guidelines are untrusted.

Model text keeps raw HTML as visible text (a response that *talks about* ``<script>`` shows it);
guidelines may use a small set of tags. Both pass through nh3 (Ammonia) at the end.
"""

import markdown
import nh3
from markdown.extensions import Extension

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
_EXTENSIONS = ["fenced_code", "tables", "sane_lists"]


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
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )


def markdown_to_safe_html(text: str) -> str:
    """Guidelines: markdown with limited inline HTML, sanitised."""
    if not text:
        return ""
    return _sanitise(markdown.markdown(text, extensions=_EXTENSIONS))


def model_text_to_safe_html(text: str) -> str:
    """Model output: markdown (code blocks, lists, tables) where any raw HTML is shown as text."""
    if not text:
        return ""
    return _sanitise(markdown.markdown(text, extensions=[*_EXTENSIONS, _EscapeRawHtml()]))
