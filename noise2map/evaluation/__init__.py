"""Scoring: per-tile confusion counts and P/R/F1/IoU (:mod:`.metrics`), the paper's rank
(:mod:`.rank`) and bootstrap intervals and rank stability (:mod:`.intervals`)."""
