"""Project tasks. ``nox`` runs lint, typecheck, tests and examples; ``nox -s bench`` the
benchmarks; ``nox -s soak`` the model-based delivery test at length."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "examples"]
nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"
SOURCES = ["keywordsai_tracing", "tests", "examples", "benchmarks", "noxfile.py"]


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.8")
    session.run("ruff", "check", *SOURCES)
    session.run("ruff", "format", "--check", *SOURCES)


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package, and on the typing contract of the decorators."""
    session.install("-e", ".[test]", "mypy>=1.13")
    session.run("mypy", "--strict", "keywordsai_tracing", "tests/typing")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def soak(session: nox.Session) -> None:
    """The model-based delivery test with many examples (``KEYWORDSAI_SOAK_EXAMPLES``,
    default 500; ``nox -s tests`` runs a dozen)."""
    session.install("-e", ".[test]")
    examples = os.environ.get("KEYWORDSAI_SOAK_EXAMPLES", "500")
    session.run(
        "pytest",
        "tests/test_delivery_model.py",
        *session.posargs,
        env={"KEYWORDSAI_SOAK_EXAMPLES": examples},
    )


@nox.session(python=PYTHON)
def examples(session: nox.Session) -> None:
    """Run every example offline and check the spans each one produced."""
    session.install("-e", ".[test,examples]")
    session.run("python", "examples/run_examples.py", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks against no tracing, the stock OpenTelemetry pipeline and the incumbent:
    the micro-benchmarks, then a FastAPI service under uvicorn (``nox -s bench --
    --scenarios service`` runs that alone, ``--quick`` shortens everything)."""
    session.install("-e", ".[test]")
    # The stock exporter pinned to the SDK just installed: unpinned, pip backtracks for
    # minutes through old instrumentation releases and gives up.
    sdk = session.run(
        "python",
        "-c",
        "import importlib.metadata as m; print(m.version('opentelemetry-sdk'))",
        silent=True,
    )
    session.install(f"opentelemetry-exporter-otlp-proto-http=={str(sdk).strip()}")
    session.run("python", "-m", "benchmarks.run", *session.posargs)
