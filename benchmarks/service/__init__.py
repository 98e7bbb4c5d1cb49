"""The real-service benchmark: a FastAPI app under uvicorn, load at a fixed rate, then a ramp.

- `server`: the app under test, one uvicorn process per contender (run as a script, so the
  incumbent's interpreter imports its own ``keywordsai_tracing``); it reports its own CPU,
  garbage collections, event-loop lag and RSS at ``GET /_bench/stats``.
- `loadgen`: the open-loop load generator, a process of its own.
- `runner`: starts the stand-in LLM server, the receiver, the servers and the load;
  `report`: the Markdown section.

``python -m benchmarks.run --scenarios service`` runs it alone.
"""
