"""Text utilities: sentence splitting for factuality labelling, and text the database can store."""

from .sentences import sentence_spans, split_sentences
from .storable import key_name, text_problem, value_problems

__all__ = ["key_name", "sentence_spans", "split_sentences", "text_problem", "value_problems"]
