"""videobert: turn your own video collection into a searchable VideoBERT model."""

__version__ = "0.1.0"
