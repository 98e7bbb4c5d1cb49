"""Benchmarks: our SDK next to no tracing, the stock OpenTelemetry pipeline and the incumbent.

``nox -s bench`` (or ``python -m benchmarks.run``) runs every contender/scenario pair in a fresh
subprocess against one local OTLP receiver (its own subprocess) and prints a Markdown
report, also written to ``benchmarks/results.md``. ``-- --quick`` runs smaller counts.
"""
