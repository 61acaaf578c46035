"""Progress messages: cp_dist's loggers write to stderr with a time stamp, so what a run reports
shows in job logs as well as terminals."""

from __future__ import annotations

import logging


def log_progress() -> None:
    """cp_dist's progress messages to stderr with a time stamp; other libraries keep their own levels."""
    logger = logging.getLogger("cp_dist")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
