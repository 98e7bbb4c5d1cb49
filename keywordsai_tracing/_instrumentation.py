"""Which instrumentors to run, as one table walked by one loop.

Each `Instruments` member maps to the library it traces (skipped when not installed),
the module of its community instrumentation package and the instrumentor class.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import TracerProvider

from . import _constant_helpers, _stream_shims
from .instruments import Instruments

logger = logging.getLogger("keywordsai_tracing.instrumentation")

_I = "opentelemetry.instrumentation."


@dataclass(frozen=True, slots=True)
class Instrumentation:
    """Where the instrumentor of one `Instruments` member lives."""

    library: str | None  # import name of the traced library; None = standard library
    module: str
    class_name: str


TABLE: dict[Instruments, Instrumentation] = {
    Instruments.OPENAI: Instrumentation("openai", _I + "openai", "OpenAIInstrumentor"),
    Instruments.ANTHROPIC: Instrumentation("anthropic", _I + "anthropic", "AnthropicInstrumentor"),
    Instruments.COHERE: Instrumentation("cohere", _I + "cohere", "CohereInstrumentor"),
    Instruments.MISTRAL: Instrumentation("mistralai", _I + "mistralai", "MistralAiInstrumentor"),
    Instruments.OLLAMA: Instrumentation("ollama", _I + "ollama", "OllamaInstrumentor"),
    Instruments.GROQ: Instrumentation("groq", _I + "groq", "GroqInstrumentor"),
    Instruments.TOGETHER: Instrumentation("together", _I + "together", "TogetherAiInstrumentor"),
    Instruments.REPLICATE: Instrumentation("replicate", _I + "replicate", "ReplicateInstrumentor"),
    Instruments.TRANSFORMERS: Instrumentation(
        "transformers", _I + "transformers", "TransformersInstrumentor"
    ),
    Instruments.BEDROCK: Instrumentation("boto3", _I + "bedrock", "BedrockInstrumentor"),
    Instruments.SAGEMAKER: Instrumentation("boto3", _I + "sagemaker", "SageMakerInstrumentor"),
    Instruments.VERTEXAI: Instrumentation("vertexai", _I + "vertexai", "VertexAIInstrumentor"),
    Instruments.GOOGLE_GENERATIVEAI: Instrumentation(
        "google.genai", _I + "google_generativeai", "GoogleGenerativeAiInstrumentor"
    ),
    Instruments.WATSONX: Instrumentation("ibm_watsonx_ai", _I + "watsonx", "WatsonxInstrumentor"),
    Instruments.ALEPHALPHA: Instrumentation(
        "aleph_alpha_client", _I + "alephalpha", "AlephAlphaInstrumentor"
    ),
    Instruments.PINECONE: Instrumentation("pinecone", _I + "pinecone", "PineconeInstrumentor"),
    Instruments.QDRANT: Instrumentation("qdrant_client", _I + "qdrant", "QdrantInstrumentor"),
    Instruments.CHROMA: Instrumentation("chromadb", _I + "chromadb", "ChromaInstrumentor"),
    Instruments.MILVUS: Instrumentation("pymilvus", _I + "milvus", "MilvusInstrumentor"),
    Instruments.WEAVIATE: Instrumentation("weaviate", _I + "weaviate", "WeaviateInstrumentor"),
    Instruments.LANCEDB: Instrumentation("lancedb", _I + "lancedb", "LanceInstrumentor"),
    Instruments.MARQO: Instrumentation("marqo", _I + "marqo", "MarqoInstrumentor"),
    Instruments.LANGCHAIN: Instrumentation(
        "langchain_core", _I + "langchain", "LangchainInstrumentor"
    ),
    Instruments.LLAMA_INDEX: Instrumentation(
        "llama_index", _I + "llamaindex", "LlamaIndexInstrumentor"
    ),
    Instruments.HAYSTACK: Instrumentation("haystack", _I + "haystack", "HaystackInstrumentor"),
    Instruments.CREW: Instrumentation("crewai", _I + "crewai", "CrewAIInstrumentor"),
    Instruments.MCP: Instrumentation("mcp", _I + "mcp", "McpInstrumentor"),
    Instruments.ASYNCIO: Instrumentation(None, _I + "asyncio", "AsyncioInstrumentor"),
    Instruments.HTTPX: Instrumentation("httpx", _I + "httpx", "HTTPXClientInstrumentor"),
    Instruments.AIOHTTP_CLIENT: Instrumentation(
        "aiohttp", _I + "aiohttp_client", "AioHttpClientInstrumentor"
    ),
    Instruments.REDIS: Instrumentation("redis", _I + "redis", "RedisInstrumentor"),
    Instruments.REQUESTS: Instrumentation("requests", _I + "requests", "RequestsInstrumentor"),
    Instruments.URLLIB3: Instrumentation("urllib3", _I + "urllib3", "URLLib3Instrumentor"),
    Instruments.PYMYSQL: Instrumentation("pymysql", _I + "pymysql", "PyMySQLInstrumentor"),
    Instruments.THREADING: Instrumentation(None, _I + "threading", "ThreadingInstrumentor"),
}


# Left out of ``instruments=None``: only on when asked for (see `Instruments`).
OPT_IN = frozenset({Instruments.ASYNCIO})


def selected(
    instruments: Iterable[Instruments] | None, block: Iterable[Instruments]
) -> list[Instruments]:
    """None = all but `OPT_IN`; a set = those; THREADING always unless blocked."""
    if instruments is None:
        chosen = set(TABLE) - OPT_IN
    else:
        chosen = set(instruments) | {Instruments.THREADING}
    chosen -= set(block)
    return [member for member in Instruments if member in chosen]


_CONTENT_VARIABLE = "TRACELOOP_TRACE_CONTENT"


class ContentSwitch:
    """Carries ``trace_content=False`` to the LLM instrumentations, which read
    ``TRACELOOP_TRACE_CONTENT`` on every call; a value the user set is left alone."""

    def __init__(self) -> None:
        self._set = False

    def silence(self) -> None:
        if os.environ.get(_CONTENT_VARIABLE) is None:
            os.environ[_CONTENT_VARIABLE] = "false"
            self._set = True

    def restore(self) -> None:
        if self._set:
            self._set = False
            os.environ.pop(_CONTENT_VARIABLE, None)


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def instrument(members: Iterable[Instruments], provider: TracerProvider) -> list[Any]:
    """Run each instrumentor once; return those this call turned on (to undo later)."""
    started: list[Any] = []
    done: list[str] = []
    skipped: list[str] = []
    for member in members:
        instrumentor, outcome = _instrument_one(member, provider)
        if instrumentor is not None:
            started.append(instrumentor)
            done.append(member.name)
        else:
            skipped.append(f"{member.name} ({outcome})")
    logger.debug(
        "Instrumented: %s. Skipped: %s.", ", ".join(done) or "none", ", ".join(skipped) or "none"
    )
    return started


def _instrument_one(member: Instruments, provider: TracerProvider) -> tuple[Any, str]:
    """The instrumentor this call turned on (or None) and what happened."""
    entry = TABLE[member]
    if entry.library is not None and not _installed(entry.library):
        return None, f"library {entry.library} not installed"
    try:
        module = importlib.import_module(entry.module)
    except ImportError:
        package = "opentelemetry-instrumentation-" + entry.module.rsplit(".", 1)[-1]
        return None, f"{package.replace('_', '-')} not installed"
    try:
        instrumentor = getattr(module, entry.class_name)()
        if instrumentor.is_instrumented_by_opentelemetry:
            return None, "already instrumented"
        instrumentor.instrument(tracer_provider=provider)
    except Exception:
        logger.warning("Could not instrument %s", member.name, exc_info=True)
        return None, "instrumentor failed"
    if not instrumentor.is_instrumented_by_opentelemetry:
        return None, "dependency check failed"
    if member in (Instruments.OPENAI, Instruments.ANTHROPIC) and entry.library is not None:
        _stream_shims.install(entry.library)
        _constant_helpers.install(entry.library)
    return instrumentor, "instrumented"


def uninstrument(instrumentors: Iterable[Any]) -> None:
    """Undo `instrument`; failures are logged, never raised.

    Some instrumentors' ``uninstrument()`` misses methods (opentelemetry-instrumentation-
    openai names them in a form ``unwrap`` no longer resolves), which would stack a new
    wrapper on every re-instrumentation: whatever the instrumentation left wrapped in its
    library's modules is restored here.
    """
    for instrumentor in instrumentors:
        try:
            instrumentor.uninstrument()
        except Exception:
            logger.warning("Could not uninstrument %s", type(instrumentor).__name__, exc_info=True)
        entry = _ENTRY_OF_CLASS.get(type(instrumentor).__name__)
        if entry is not None and entry.library is not None:
            _constant_helpers.uninstall(entry.library)
            try:
                _unwrap_leftovers(entry.library.split(".")[0], entry.module)
            except Exception:
                logger.debug("Could not check %s for leftover wrappers", entry.library)


_ENTRY_OF_CLASS = {entry.class_name: entry for entry in TABLE.values()}


def _original(value: Any, instrumentation_module: str) -> Any:
    """``value`` without the wrapt wrappers ``instrumentation_module`` put around it."""
    if not type(value).__name__.endswith("FunctionWrapper"):
        return value  # never touch other objects (lazy proxies resolve on attribute access)
    while getattr(getattr(value, "_self_wrapper", None), "__module__", "").startswith(
        instrumentation_module
    ):
        value = value.__wrapped__
    return value


def _unwrap_leftovers(library: str, instrumentation_module: str) -> None:
    """Restore functions and methods of ``library`` still wrapped by the instrumentation."""
    prefix = library + "."
    for name, module in list(sys.modules.items()):
        if module is None or not (name == library or name.startswith(prefix)):
            continue
        owners: list[Any] = [module]
        owners += [
            owner
            for owner in list(vars(module).values())
            # type(), not isinstance(): isinstance consults ``__class__``, which makes a
            # lazy proxy (openai's) import its module and build its classes.
            if issubclass(type(owner), type) and owner.__module__ == name
        ]
        for owner in owners:
            for attr, value in list(vars(owner).items()):
                try:
                    original = _original(value, instrumentation_module)
                    if original is not value:
                        setattr(owner, attr, original)
                except Exception:  # an odd attribute never stops the walk
                    logger.debug("Could not check %s.%s", name, attr)
