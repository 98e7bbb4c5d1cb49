"""The public API users port from keywordsai-tracing: pinned so it cannot drift."""

from __future__ import annotations

import importlib

import keywordsai_tracing

EXPECTED_ALL = {
    "Instruments",
    "KeywordsAIClient",
    "KeywordsAIParams",
    "KeywordsAITelemetry",
    "__version__",
    "agent",
    "get_client",
    "keywordsai_span_attributes",
    "task",
    "tool",
    "workflow",
}


def test_top_level_all_is_pinned() -> None:
    assert set(keywordsai_tracing.__all__) == EXPECTED_ALL
    for name in EXPECTED_ALL:
        assert getattr(keywordsai_tracing, name) is not None


def test_incumbent_import_paths() -> None:
    main = importlib.import_module("keywordsai_tracing.main")
    decorators = importlib.import_module("keywordsai_tracing.decorators")
    instruments = importlib.import_module("keywordsai_tracing.instruments")
    assert main.KeywordsAITelemetry is keywordsai_tracing.KeywordsAITelemetry
    assert decorators.workflow is keywordsai_tracing.workflow
    assert decorators.task is keywordsai_tracing.task
    assert decorators.agent is keywordsai_tracing.agent
    assert decorators.tool is keywordsai_tracing.tool
    assert instruments.Instruments is keywordsai_tracing.Instruments


def test_instruments_members_match_the_incumbent() -> None:
    expected = [
        "OPENAI",
        "ANTHROPIC",
        "COHERE",
        "MISTRAL",
        "OLLAMA",
        "GROQ",
        "TOGETHER",
        "REPLICATE",
        "TRANSFORMERS",
        "BEDROCK",
        "SAGEMAKER",
        "VERTEXAI",
        "GOOGLE_GENERATIVEAI",
        "WATSONX",
        "ALEPHALPHA",
        "PINECONE",
        "QDRANT",
        "CHROMA",
        "MILVUS",
        "WEAVIATE",
        "LANCEDB",
        "MARQO",
        "LANGCHAIN",
        "LLAMA_INDEX",
        "HAYSTACK",
        "CREW",
        "MCP",
        "REDIS",
        "REQUESTS",
        "URLLIB3",
        "PYMYSQL",
        "THREADING",
    ]
    members = keywordsai_tracing.Instruments.__members__
    assert set(expected) <= set(members)
    for name in expected:
        assert members[name].value == name.lower()


def test_client_methods_exist() -> None:
    client = keywordsai_tracing.get_client()
    for method in (
        "get_current_trace_id",
        "get_current_span_id",
        "get_current_span",
        "get_tracer",
        "update_current_span",
        "add_event",
        "record_exception",
        "is_recording",
        "flush",
        "aflush",
        "get_context_value",
        "set_context_value",
    ):
        assert callable(getattr(client, method))


def test_telemetry_methods_exist() -> None:
    for method in (
        "flush",
        "aflush",
        "shutdown",
        "ashutdown",
        "is_initialized",
        "get_client",
        "add_processor",
    ):
        assert callable(getattr(keywordsai_tracing.KeywordsAITelemetry, method))


def test_py_typed_ships() -> None:
    from importlib.resources import files

    assert files("keywordsai_tracing").joinpath("py.typed").is_file()


def test_exporters_module_is_pinned() -> None:
    exporters = importlib.import_module("keywordsai_tracing.exporters")
    assert set(exporters.__all__) == {
        "ConsoleTraceExporter",
        "JsonLinesFileExporter",
        "OTLPHttpExporter",
        "exporter_from_spec",
        "format_duration",
        "read_spans",
    }


def test_processors_module_is_pinned() -> None:
    processors = importlib.import_module("keywordsai_tracing.processors")
    assert set(processors.__all__) == {
        "AsyncBatchSpanProcessor",
        "ProcessorStats",
        "SimpleAsyncSpanProcessor",
    }
