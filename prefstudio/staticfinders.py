"""Serve plotly.js from the ``plotly`` package's own bundled file as ``vendor/plotly.min.js`` (no CDN)."""

from pathlib import Path

import plotly
from django.contrib.staticfiles.finders import BaseFinder
from django.core.files.storage import FileSystemStorage

PLOTLY_DIR = Path(plotly.__file__).resolve().parent / "package_data"
PLOTLY_NAME = "vendor/plotly.min.js"


class PlotlyFinder(BaseFinder):
    """Finds exactly one file: ``vendor/plotly.min.js`` → ``plotly/package_data/plotly.min.js``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.storage = FileSystemStorage(location=str(PLOTLY_DIR))
        self.storage.prefix = "vendor"

    def check(self, **kwargs):
        return []

    def find(self, path, find_all=False, **kwargs):
        if path != PLOTLY_NAME:
            return [] if find_all else None
        match = str(PLOTLY_DIR / "plotly.min.js")
        return [match] if find_all else match

    def list(self, ignore_patterns):
        yield "plotly.min.js", self.storage
