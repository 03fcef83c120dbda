"""What a domain stream's page shows: each method's forgetting matrix as a heatmap, and the table of every
domain's held-out accuracy after the last domain (``services/domain_streams.py``)."""

from .models import DomainStream

METHODS = (("sequential", "Sequential DPO"), ("ofs", "OFS (fast-slow, chained)"), ("cofs", "COFS (combined)"))


def matrix_charts(stream: DomainStream) -> list[dict]:
    """``[{"key", "title", "domains", "z", "weights"}]``: ``z[i][j]`` is domain j's held-out accuracy after
    training through domain i (empty until the stream has finished)."""
    charts = []
    for key, title in METHODS:
        matrix = (stream.result or {}).get(key)
        if not matrix:
            continue
        charts.append(
            {
                "key": key,
                "title": title,
                "domains": list(matrix["domains"]),
                "z": [list(row) for row in matrix["accuracy"]],
                "weights": [list(w) for w in matrix.get("weights", [])],
            }
        )
    return charts


def forgetting_rows(stream: DomainStream) -> list[dict]:
    """Per domain: its accuracy right after it was trained and after the last domain, for each method (what
    the later domains cost it)."""
    result = stream.result or {}
    if not all(key in result for key, _ in METHODS):
        return []
    domains = result["sequential"]["domains"]
    rows = []
    for j, domain in enumerate(domains):
        cells = []
        for key, _ in METHODS:
            accuracy = result[key]["accuracy"]
            cells.append({"method": key, "learned": accuracy[j][j], "kept": accuracy[-1][j]})
        rows.append({"domain": domain, "cells": cells})
    return rows
