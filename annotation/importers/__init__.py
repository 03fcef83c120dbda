"""Reading preference files (TRL, HH, step-wise, Pick-a-Pic, multi-image, factuality) into plain rows.

No Django here: ``annotation.services.imports`` stores what ``validate_source`` returns.
"""

from .detect import FORMAT_NAMES, TASK_TYPES, Format
from .pipeline import Limits, Validation, validate_source
from .records import CandidateIn, FileFormatError, Issue, JudgmentIn, RowIn, StagedImage, TaskIn
from .screening import FieldLimits
from .sources import DataSource, open_source

__all__ = [
    "FORMAT_NAMES",
    "TASK_TYPES",
    "CandidateIn",
    "DataSource",
    "FieldLimits",
    "FileFormatError",
    "Format",
    "Issue",
    "JudgmentIn",
    "Limits",
    "RowIn",
    "StagedImage",
    "TaskIn",
    "Validation",
    "open_source",
    "validate_source",
]
