from dataclasses import dataclass

from .detect import Format
from .images import ImageStager


@dataclass
class ParseContext:
    """What a row parser needs besides the row: the detected format, the project's task type, images."""

    fmt: Format
    task_type: str
    stager: ImageStager
