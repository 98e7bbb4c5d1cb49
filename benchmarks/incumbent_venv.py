"""The incumbent's own virtualenv: found, or created with ``python -m venv`` and pip.
`add_packages` adds what the service benchmark's server needs (fastapi, uvicorn, openai)."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

INCUMBENT = "keywordsai-tracing==0.0.59"
_VERSION = INCUMBENT.split("==")[1]
_CHECK = (
    "import importlib.metadata as m, keywordsai_tracing; print(m.version('keywordsai-tracing'))"
)


def _python_in(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def _has_incumbent(python: Path) -> bool:
    if not python.exists():
        return False
    try:
        check = subprocess.run(
            [str(python), "-c", _CHECK], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return check.returncode == 0 and check.stdout.strip() == _VERSION


def _last_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


def _name(requirement: str) -> str:
    """The normalised project name of a ``name==version`` line."""
    return re.sub(r"[-_.]+", "-", requirement.split("==")[0]).strip().lower()


def add_packages(python: Path, requirements: list[str], modules: list[str]) -> str | None:
    """Install ``requirements`` (``name==version``) into ``python``'s environment unless
    ``modules`` already import there. The incumbent and the OpenTelemetry packages keep
    their versions; a requirement whose version does not fit them is installed at the
    newest version that does.

    Returns None when the modules import, else why they do not.
    """
    check = [str(python), "-c", "import " + ", ".join(modules)]
    if subprocess.run(check, capture_output=True, timeout=120).returncode == 0:
        return None
    print(f"[bench] adding {' '.join(requirements)} to {python} ...", file=sys.stderr, flush=True)
    pip = [str(python), "-m", "pip"]
    frozen = subprocess.run(
        [*pip, "freeze", "--exclude-editable"], capture_output=True, text=True, timeout=120
    )
    keep = [
        line
        for line in frozen.stdout.splitlines()
        if "==" in line and _name(line).startswith(("keywordsai-", "opentelemetry-"))
    ]
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as constraints:
        constraints.write("\n".join(keep) + "\n")
        constraints.flush()
        install = [*pip, "install", "-q", "--disable-pip-version-check", "-c", constraints.name]
        for requirement in requirements:
            reason = "not tried"
            for attempt in (requirement, _name(requirement)):
                try:
                    done = subprocess.run(
                        [*install, attempt], capture_output=True, text=True, timeout=900
                    )
                except (OSError, subprocess.TimeoutExpired) as error:
                    return f"could not install {attempt}: {error}"
                if done.returncode == 0:
                    break
                reason = _last_line(done.stderr or done.stdout)
            else:
                return f"could not install {requirement}: {reason}"
    if subprocess.run(check, capture_output=True, timeout=120).returncode != 0:
        return f"{', '.join(modules)} not importable after installing them"
    return None


def ensure(venv: Path, python: Path | None = None) -> tuple[Path | None, str]:
    """The incumbent's interpreter, and how it was obtained or why it is missing.

    An explicit ``python`` is used as is if it has the incumbent; otherwise ``venv`` is
    used, created (``python -m venv`` + ``pip install``) when it lacks the incumbent.
    """
    if python is not None:
        if _has_incumbent(python):
            return python, f"{INCUMBENT} at {python}"
        return None, f"{python} has no {INCUMBENT}"
    venv_python = _python_in(venv)
    if _has_incumbent(venv_python):
        return venv_python, f"{INCUMBENT} in {venv}"
    print(f"[bench] creating {venv} with {INCUMBENT} ...", file=sys.stderr, flush=True)
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(venv_python), "-m", "pip", "install", "-q", "--disable-pip-version-check", INCUMBENT],
    ]
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as error:
            return None, f"could not create the incumbent venv: {error}"
        if done.returncode != 0:
            reason = _last_line(done.stderr or done.stdout)
            return None, f"could not create the incumbent venv ({step[2]}): {reason}"
    if not _has_incumbent(venv_python):
        return None, f"{INCUMBENT} not importable in {venv} after installing it"
    return venv_python, f"{INCUMBENT} installed in {venv}"
