"""Pick-a-Pic image pairs: caption, jpg_0, jpg_1 (bytes, {bytes, path} or a path in the zip), label_0
(optional: without it the pair is for annotators to judge)."""

from . import fields
from .context import ParseContext
from .records import CandidateIn, JudgmentIn, RowError, RowIn, TaskIn

COLUMNS = {"caption", "jpg_0", "jpg_1", "label_0"}
CHOICES = {1.0: "a", 0.0: "b", 0.5: "tie"}


def parse_pickapic(record: dict, line: int, ctx: ParseContext) -> RowIn:
    """A labelled pair (``label_0``) imports with its judgment; a row without ``label_0`` (or with null)
    is a pair for the annotators to judge."""
    fields.require(record, ["caption", "jpg_0", "jpg_1"])
    caption = fields.text(record["caption"], "caption")
    judgment = None
    if record.get("label_0") is not None:
        label = fields.number(record["label_0"], "label_0")
        if label not in CHOICES:
            raise RowError(
                "label_0",
                f"must be 1 (image 0 preferred), 0 (image 1 preferred) or 0.5 (tie), got {label:g}",
            )
        judgment = JudgmentIn(choice=CHOICES[label], label_score=label)
    images = [ctx.stager.stage(record[name], name) for name in ("jpg_0", "jpg_1")]
    return RowIn(
        line=line,
        prompt=caption,
        candidates=[CandidateIn(image=image) for image in images],
        tasks=[TaskIn((0, 1), judgment)],
        split=fields.split_of(record),
        metadata=fields.metadata_of(record, COLUMNS),
    )
