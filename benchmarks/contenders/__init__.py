"""Contenders, imported lazily by name so each worker loads only its own SDK."""

from __future__ import annotations

import importlib

from .base import Contender, Options

__all__ = ["MODULES", "Contender", "Options", "create"]

# label -> module defining ``create(options) -> Contender``
MODULES: dict[str, str] = {
    "none": "benchmarks.contenders.none",
    "stock": "benchmarks.contenders.stock",
    "incumbent": "benchmarks.contenders.incumbent",
    "ours": "benchmarks.contenders.ours",
}


def create(kind: str, options: Options) -> Contender:
    """Import the contender ``kind`` and set it up with ``options``."""
    module = importlib.import_module(MODULES[kind])
    contender: Contender = module.create(options)
    return contender
