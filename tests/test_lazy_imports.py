"""The SDK imports only what is used: an instrumentation, its library and its stream
shims load only when that instrument is enabled; the protobuf encoder only when asked.

Each check runs in a fresh interpreter, where ``sys.modules`` starts clean.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

_PROBE = textwrap.dedent(
    """
    import json, sys
    import fastapi, openai  # the application's own imports
    from keywordsai_tracing import Instruments, KeywordsAITelemetry
    instruments = {getattr(Instruments, name) for name in json.loads(sys.argv[1])}
    options = json.loads(sys.argv[2])
    telemetry = KeywordsAITelemetry(
        base_url="http://127.0.0.1:9/api", api_key="k", instruments=instruments, **options
    )
    loaded = sorted({name.split(".")[0] for name in sys.modules})
    print(json.dumps({
        "top": loaded,
        "otel": sorted(n for n in sys.modules if n.startswith("opentelemetry.instrumentation.")),
        "protobuf": "google.protobuf" in sys.modules,
    }))
    """
)


def _probe(instruments: list[str], **kwargs: object) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(instruments), json.dumps(kwargs)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _instrumentations(result: dict[str, object]) -> set[str]:
    names = result["otel"]
    assert isinstance(names, list)
    return {name.split(".")[2] for name in names}


def test_openai_alone_never_imports_anthropic_or_its_instrumentation() -> None:
    result = _probe(["OPENAI"])
    top = result["top"]
    assert isinstance(top, list)
    assert "anthropic" not in top
    assert _instrumentations(result) <= {
        "openai",
        "threading",  # always on (context into threads)
        "instrumentor",
        "dependencies",
        "utils",
        "_semconv",
        "version",
    }


def test_anthropic_and_its_stream_shims_load_when_asked_for() -> None:
    result = _probe(["ANTHROPIC"])
    top = result["top"]
    assert isinstance(top, list)
    assert "anthropic" in top
    assert "anthropic" in _instrumentations(result)
    assert "openai" not in _instrumentations(result)


@pytest.mark.parametrize("protocol", ["json", "protobuf"])
def test_protobuf_loads_only_for_the_protobuf_protocol(protocol: str) -> None:
    # The encoder is imported lazily at the first protobuf export; constructing the
    # telemetry with JSON must not pull protobuf in at all.
    result = _probe([])
    assert result["protobuf"] is False
    if protocol == "protobuf":
        code = (
            "import asyncio, sys\n"
            "from keywordsai_tracing._otlp_json import aencode\n"
            "asyncio.run(aencode([], protobuf=True))\n"
            "print('google.protobuf' in sys.modules)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
        )
        assert out.stdout.strip() == "True"


def test_shutting_down_imports_nothing_and_removes_the_wrappers() -> None:
    # The leftover-wrapper walk once touched openai's lazy proxies with isinstance(),
    # which imported about a thousand openai modules and took a second at shutdown.
    code = textwrap.dedent(
        """
        import json, sys
        import openai
        from openai.resources.chat.completions import Completions
        from keywordsai_tracing import Instruments, KeywordsAITelemetry
        telemetry = KeywordsAITelemetry(
            base_url="http://127.0.0.1:9/api", api_key="k", instruments={Instruments.OPENAI}
        )
        wrapped = type(vars(Completions)["create"]).__name__
        before = set(sys.modules)
        telemetry.shutdown()
        print(json.dumps({
            "wrapped": wrapped,
            "after": type(vars(Completions)["create"]).__name__,
            "imported": sorted(set(sys.modules) - before),
        }))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["wrapped"].endswith("FunctionWrapper")
    assert result["after"] == "function"
    assert result["imported"] == []
