"""The libraries `KeywordsAITelemetry` can instrument automatically."""

from __future__ import annotations

from enum import Enum

__all__ = ["Instruments"]


class Instruments(Enum):
    """A library whose calls can be traced automatically; the value is its key.

    ``ASYNCIO`` (opentelemetry-instrumentation-asyncio) is the one member that
    ``instruments=None`` leaves out: it wraps every ``create_task``/``gather``/
    ``to_thread`` call yet traces only the coroutines named in
    ``OTEL_PYTHON_ASYNCIO_COROUTINE_NAMES_TO_TRACE``, and parenting across tasks needs
    no instrumentation (context travels with ``contextvars``). Ask for it explicitly.
    """

    # AI/ML libraries
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    COHERE = "cohere"
    MISTRAL = "mistral"
    OLLAMA = "ollama"
    GROQ = "groq"
    TOGETHER = "together"
    REPLICATE = "replicate"
    TRANSFORMERS = "transformers"
    # Cloud AI services
    BEDROCK = "bedrock"
    SAGEMAKER = "sagemaker"
    VERTEXAI = "vertexai"
    GOOGLE_GENERATIVEAI = "google_generativeai"
    WATSONX = "watsonx"
    ALEPHALPHA = "alephalpha"
    # Vector databases
    PINECONE = "pinecone"
    QDRANT = "qdrant"
    CHROMA = "chroma"
    MILVUS = "milvus"
    WEAVIATE = "weaviate"
    LANCEDB = "lancedb"
    MARQO = "marqo"
    # Frameworks
    LANGCHAIN = "langchain"
    LLAMA_INDEX = "llama_index"
    HAYSTACK = "haystack"
    CREW = "crew"
    MCP = "mcp"
    # Infrastructure
    ASYNCIO = "asyncio"
    HTTPX = "httpx"
    AIOHTTP_CLIENT = "aiohttp_client"
    REDIS = "redis"
    REQUESTS = "requests"
    URLLIB3 = "urllib3"
    PYMYSQL = "pymysql"
    THREADING = "threading"
