"""One contender/scenario pair: ``python benchmarks/_worker.py SPEC.json`` (run by `run.py`).

Started as a script, not with ``-m``, so the repository root is not put on ``sys.path``:
the incumbent's interpreter must import its own ``keywordsai_tracing``, not this checkout.
The spec names the contender, scenario, options and parameters; the result is written as
JSON to the spec's ``result_path``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path


def _import_benchmarks_package() -> None:
    """Load the ``benchmarks`` package from this file's folder by location."""
    here = Path(__file__).resolve().parent
    if sys.path and Path(sys.path[0] or ".").resolve() == here:
        del sys.path[0]
    spec = importlib.util.spec_from_file_location(
        "benchmarks", here / "__init__.py", submodule_search_locations=[str(here)]
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["benchmarks"] = module
    spec.loader.exec_module(module)


def main(spec_path: str) -> None:
    """Run the spec and write its result."""
    _import_benchmarks_package()
    from benchmarks.contenders import Options, create
    from benchmarks.workloads import SCENARIOS

    spec = json.loads(Path(spec_path).read_text())
    contender = create(spec["contender"], Options(**spec["options"]))
    result = SCENARIOS[spec["scenario"]](contender, spec["params"])
    result["info"] = contender.info
    Path(spec["result_path"]).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
