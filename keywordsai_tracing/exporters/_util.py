"""Logging helpers shared by the local exporters."""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable
from typing import Any

logger = logging.getLogger("keywordsai_tracing.exporters")


class LogOnce:
    """Log a warning the first time each cause is seen (an exporter may be called for
    every span: a broken stream or a full disk must not flood the log)."""

    def __init__(self) -> None:
        self._seen: set[Hashable] = set()
        self._lock = threading.Lock()

    def __call__(self, cause: Hashable, message: str, *args: Any, exc_info: bool = False) -> None:
        with self._lock:
            if cause in self._seen:
                return
            self._seen.add(cause)
        logger.warning(message, *args, exc_info=exc_info)
