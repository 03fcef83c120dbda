"""Chat message content as plain text (for screens, lists and snippets)."""


def content_text(content) -> str:
    """Message content as text: a string, or the text parts of a multimodal list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p if isinstance(p, str) else p.get("text", "") for p in content if isinstance(p, str | dict)]
        return "\n\n".join(part for part in parts if part)
    return str(content)
