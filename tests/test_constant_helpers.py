"""`_constant_helpers`: instrumentation helpers answering a constant are asked once while
instrumented, give the same answers, and are put back at shutdown."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from keywordsai_tracing import Instruments, KeywordsAITelemetry, _constant_helpers

HELPERS = ("is_openai_v1", "is_reasoning_supported")
# Importing opentelemetry-instrumentation-openai 0.62 warns (issue #11 makes the SDK
# tolerate it under filterwarnings=error; until then each LLM test module allows it).
IMPORT_WARNING = "ignore:Support for class-based `config` is deprecated:DeprecationWarning"


def _bindings() -> dict[tuple[str, str], object]:
    """Every binding of the helpers' names in the openai instrumentation's modules."""
    package = "opentelemetry.instrumentation.openai"
    return {
        (module_name, name): vars(module)[name]
        for module_name, module in list(sys.modules.items())
        if module is not None and (module_name == package or module_name.startswith(package + "."))
        for name in HELPERS
        if name in vars(module)
    }


@pytest.mark.filterwarnings(IMPORT_WARNING)
def test_openai_version_checks_are_answered_once_and_put_back_at_shutdown() -> None:
    from opentelemetry.instrumentation.openai import utils

    originals = {name: getattr(utils, name) for name in HELPERS}
    answers = {name: function() for name, function in originals.items()}
    telemetry = KeywordsAITelemetry(
        app_name="helpers",
        custom_exporter=InMemorySpanExporter(),
        is_batching_enabled=False,
        instruments={Instruments.OPENAI},
    )
    try:
        during = _bindings()
        # utils and the wrapper modules that imported the names, all answered once
        assert len(during) >= 4
        assert _constant_helpers.installed("openai") == len(during)
        for (module_name, name), bound in during.items():
            assert bound is not originals[name], module_name
            assert callable(bound)
            assert bound() is answers[name]
            assert getattr(bound, "__wrapped__", None) is originals[name]
    finally:
        telemetry.shutdown()
    after = _bindings()
    assert set(after) == set(during)
    assert all(bound is originals[name] for (_, name), bound in after.items())
    assert _constant_helpers.installed("openai") == 0


@pytest.fixture
def fake_instrumentation(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """``fakeinst.utils`` with helpers of every kind, and ``fakeinst.wrappers`` importing
    them by name, registered as the helpers of a library called ``fakelib``."""
    utils = types.ModuleType("fakeinst.utils")

    def answers_true() -> bool:
        return True

    def raises() -> bool:
        raise RuntimeError("version unknown")

    def takes_an_argument(version: str) -> bool:
        return version > "1"

    def answers_an_int() -> int:
        return 1

    helpers = {
        "answers_true": answers_true,
        "raises": raises,
        "takes_an_argument": takes_an_argument,
        "answers_an_int": answers_an_int,
    }
    for name, function in helpers.items():
        setattr(utils, name, function)
    wrappers = types.ModuleType("fakeinst.wrappers")
    wrappers.answers_true = answers_true  # type: ignore[attr-defined]
    wrappers.raises = raises  # type: ignore[attr-defined]
    elsewhere = types.ModuleType("unrelated")  # outside the package: never touched
    elsewhere.answers_true = answers_true  # type: ignore[attr-defined]
    for module in (utils, wrappers, elsewhere):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(
        _constant_helpers._HELPERS, "fakelib", ("fakeinst.utils", (*helpers, "missing"))
    )
    yield utils
    _constant_helpers.uninstall("fakelib")


def test_only_argument_free_helpers_answering_a_bool_are_replaced(
    fake_instrumentation: types.ModuleType,
) -> None:
    utils = fake_instrumentation
    before = dict(vars(utils))
    wrappers, elsewhere = sys.modules["fakeinst.wrappers"], sys.modules["unrelated"]
    _constant_helpers.install("fakelib")
    _constant_helpers.install("fakelib")  # twice: nothing more
    assert _constant_helpers.installed("fakelib") == 2  # answers_true in utils and wrappers
    assert utils.answers_true is not before["answers_true"]
    assert utils.answers_true() is True
    assert wrappers.answers_true is utils.answers_true  # type: ignore[attr-defined]
    assert elsewhere.answers_true is before["answers_true"]  # type: ignore[attr-defined]
    for name in ("raises", "takes_an_argument", "answers_an_int"):
        assert vars(utils)[name] is before[name], name
    _constant_helpers.uninstall("fakelib")
    assert utils.answers_true is before["answers_true"]
    assert wrappers.answers_true is before["answers_true"]  # type: ignore[attr-defined]


def test_a_helper_rebound_by_someone_else_is_not_put_back(
    fake_instrumentation: types.ModuleType,
) -> None:
    utils = fake_instrumentation

    def theirs() -> bool:
        return False

    _constant_helpers.install("fakelib")
    utils.answers_true = theirs  # type: ignore[attr-defined]
    _constant_helpers.uninstall("fakelib")
    assert utils.answers_true is theirs
