"""The attack's inputs, built in code: valid rows of every import format, the ways to spoil each of their
fields, damaged zips and images, and hostile JSON values (``tests/unit/test_attack_corpus.py`` runs them).
"""

import io
import json
import struct
import zipfile
import zlib

from .import_samples import png_bytes

NUL = "\x00"
SURROGATE = "\ud800"
DEEP = 100_000
"""Nesting far past Python's recursion limit (``json.loads`` raises RecursionError near 1,000)."""

# Every format's valid row; the second row of a file is the spoiled one (line 2), the first stays valid.
# Image values are paths inside the zip that ``zip_of`` builds (a.png, b.png).
FORMATS = {
    "trl": ("pairwise", {"prompt": "What is 2 + 2?", "chosen": "It is 4.", "rejected": "It is 5."}),
    "trl-conv": (
        "pairwise",
        {
            "prompt": [{"role": "user", "content": "Hi there"}],
            "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]}],
            "rejected": [{"role": "assistant", "content": "Go away."}],
        },
    ),
    "responses": ("ranking", {"prompt": "Name a colour.", "responses": ["Red.", "Blue.", "Green."]}),
    "hh": (
        "pairwise",
        {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi\n\nAssistant: Go away."},
    ),
    "stepwise": (
        "stepwise",
        {
            "prompt": "Solve x + 1 = 3.",
            "initial_reason_steps": "Step 1: subtract 1.",
            "chosen": "x = 2.",
            "rejected": "x = 4.",
            "answer": "2",
        },
    ),
    "pickapic": ("image_pair", {"caption": "A red square", "jpg_0": "a.png", "jpg_1": "b.png", "label_0": 1}),
    "multi_image": (
        "multi_image",
        {
            "images": ["a.png", "b.png"],
            "prompt": "Which is red?",
            "chosen": "The first.",
            "rejected": "None.",
        },
    ),
    "factuality": (
        "factuality",
        {
            "prompt": "Where is Paris?",
            "responses": [
                {"text": "Paris is in France.", "sentences": [{"text": "Paris is in France.", "label": 1}]}
            ],
        },
    ),
}
IMAGES = {"a.png": png_bytes((255, 0, 0)), "b.png": png_bytes((0, 0, 255))}


def second_variant(row: dict) -> dict:
    """The same row with different text, so the file's first row is not a duplicate of the spoiled one."""
    for path in list(string_paths(row)):
        value = row
        for part in path:
            value = value[part]
        if not value.endswith(".png") and path[-1] not in ("label", "role", "type"):
            row = replaced(row, path, value + " 2")
    return row


def string_paths(value, path=()):
    """Paths (tuples of keys and indexes) of every string leaf of ``value``."""
    if isinstance(value, str):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from string_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from string_paths(item, (*path, index))


def path_name(path: tuple) -> str:
    """How an import report names the field at ``path``: ``chosen[0].content``."""
    name = ""
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else part)
    return name


def replaced(row: dict, path: tuple, value) -> dict:
    row = json.loads(json.dumps(row))
    target = row
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return row


WRONG_TYPES = [5, -(10**30), 1.5e308, None, True, [], {}, [[["x"]]], {"a": {"b": "c"}}]


def deep_list(depth: int):
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def deep_json(depth: int = DEEP) -> str:
    return "[" * depth + "]" * depth


def jsonl_of(rows: list) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def zip_of(data_name: str, data: bytes, files: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(data_name, data)
        for name, content in (IMAGES if files is None else files).items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _spoil_member(archive: bytes, name: str) -> bytes:
    """Flip a byte inside the compressed data of member ``name``: its CRC (or the deflate stream) fails."""
    with zipfile.ZipFile(io.BytesIO(archive)) as handle:
        info = handle.getinfo(name)
    data = bytearray(archive)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + info.compress_size // 2] ^= 0x55
    return bytes(data)


def _patch_central(archive: bytes, *, flag: int | None = None, method: int | None = None) -> bytes:
    """Set the general-purpose flag (1 = encrypted) or the compression method of every member."""
    data = bytearray(archive)
    for signature, flag_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        start = 0
        while (start := data.find(signature, start)) != -1:
            if flag is not None:
                data[start + flag_at : start + flag_at + 2] = struct.pack("<H", flag)
            if method is not None:
                data[start + method_at : start + method_at + 2] = struct.pack("<H", method)
            start += 4
    return bytes(data)


def _lying_size(archive: bytes) -> bytes:
    """The data member's headers claim 10 bytes; it inflates to far more (a zip bomb's trick)."""
    data = bytearray(archive)
    for signature, size_at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = data.find(signature)
        data[start + size_at : start + size_at + 4] = struct.pack("<I", 10)
    return bytes(data)


def bad_zips(rows: list[dict]) -> dict[str, bytes]:
    """Damaged or hostile zips around a valid JSONL file."""
    good = zip_of("data.jsonl", jsonl_of(rows))
    bomb = zip_of("data.jsonl", jsonl_of(rows) + b" " * 5_000_000, files={})
    return {
        "data member fails its CRC": _spoil_member(good, "data.jsonl"),
        "image member fails its CRC": _spoil_member(good, "a.png"),
        "truncated": good[: len(good) // 2],
        "garbage": b"PK\x03\x04" + b"\xff" * 200,
        "empty": b"",
        "encrypted members": _patch_central(good, flag=1),
        "unknown compression method": _patch_central(good, method=99),
        "header lies about the size": _lying_size(bomb),
        "inflates past the upload limit": bomb,
        "no data file": zip_of("readme.txt", b"hello"),
        "two data files": zip_of("a.jsonl", jsonl_of(rows), files={"b.jsonl": jsonl_of(rows)}),
    }


def bad_images() -> dict[str, bytes]:
    png = png_bytes()
    huge = bytearray(png)  # the IHDR claims 100,000 × 100,000 pixels
    huge[16:24] = struct.pack(">II", 100_000, 100_000)
    huge[29:33] = struct.pack(">I", zlib.crc32(bytes(huge[12:29])))
    return {
        "truncated png": png[: len(png) // 2],
        "not an image": b"hello, this is text",
        "empty": b"",
        "decompression bomb": bytes(huge),
        "svg": b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>",
    }


BAD_IMAGE_PATHS = ["../../etc/passwd", "/etc/passwd", "C:\\boot.ini", "missing.png", "", "a.png\x00.txt"]
