"""Text utilities: sentence splitting for factuality labelling."""

from .sentences import sentence_spans, split_sentences

__all__ = ["sentence_spans", "split_sentences"]
