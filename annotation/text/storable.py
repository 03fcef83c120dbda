"""Text and JSON the database can store.

PostgreSQL refuses a NUL (``\\u0000``) in text and JSON columns, and a lone surrogate (``"\\ud800"``,
which ``json.loads`` accepts) cannot be encoded as UTF-8 at all: either fails the write, after
everything else was checked.  Values nested thousands deep break Python's recursive printing and
copying, and NaN is not JSON.  These checks name where the problem is, so a caller can report it as a
field error.
"""

import math


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored, or None when it can."""
    if "\x00" in value:
        return "contains a NUL character (\\u0000), which cannot be stored"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"contains a lone surrogate (\\u{ord(value[exc.start]):04x}), which is not valid text"
    return None


def key_name(key) -> str:
    """A key as a message shows it: itself when plain, else its repr (never a raw NUL)."""
    text = str(key)
    if text and text.isprintable() and len(text) <= 80 and text.strip() == text:
        return text
    return repr(text)[:80]


def value_problems(value, path: str, *, max_depth: int) -> tuple[int, list[tuple[str, str]]]:
    """(size, problems) of a JSON-like value: its size in characters (strings and keys by length, any
    other value one), and (where, reason) for every unstorable string or key, every NaN or infinity
    inside a list or object (a bare one is the caller's: importers drop NaN cells), and every container
    nested deeper than ``max_depth`` below ``value``.  Iterative: a hostile value may nest thousands deep.
    ``where`` extends ``path`` (``messages[0].content``; a key alone when ``path`` is empty)."""
    size, problems, stack = 0, [], [(path, value, 0)]
    while stack:
        where, current, depth = stack.pop()
        if isinstance(current, str):
            size += len(current)
            if (problem := text_problem(current)) is not None:
                problems.append((where, problem))
            continue
        size += 1
        if isinstance(current, float) and depth > 0 and not math.isfinite(current):
            problems.append((where, f"is {current}, which JSON cannot hold"))
        if not isinstance(current, dict | list):
            continue
        if depth >= max_depth:
            problems.append((where, f"is nested more than {max_depth} levels deep"))
            continue
        if isinstance(current, list):
            children = [(f"{where}[{index}]", item, depth + 1) for index, item in enumerate(current)]
        else:
            children = [_keyed(where, key, item, depth, problems) for key, item in current.items()]
            size += sum(len(key) if isinstance(key, str) else 1 for key in current)
        stack.extend(reversed(children))  # reported in the value's own order
    return size, problems


def _keyed(where: str, key, item, depth: int, problems: list) -> tuple[str, object, int]:
    child = f"{where}.{key_name(key)}" if where else key_name(key)
    if isinstance(key, str) and (problem := text_problem(key)) is not None:
        problems.append((child, f"the key {problem}"))
    return child, item, depth + 1
