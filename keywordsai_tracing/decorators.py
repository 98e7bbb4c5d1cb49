"""The four decorators: `workflow`, `task`, `agent`, `tool`.

Each works on plain functions, coroutine functions, generators, async generators,
methods (``staticmethod``/``classmethod`` in either order) and, with ``method_name=``,
on a class. Both ``@task`` and ``@task(name=..., version=..., processors=...)`` work.

The span is named ``"{name}.{kind}"``; ``name`` defaults to the function's (or class's)
``__name__``. ``processors`` routes the span, and spans inside it, to processors added
with ``add_processor(name=...)``.
"""

from __future__ import annotations

from ._decorators import EntityDecorator

__all__ = ["agent", "task", "tool", "workflow"]

workflow = EntityDecorator(
    "workflow",
    "Trace a function as a workflow, the root of a unit of work: spans started inside it "
    "carry ``traceloop.workflow.name``.",
)
task = EntityDecorator(
    "task",
    "Trace a function as a task, a step of a workflow: its span and spans inside it carry "
    "``traceloop.entity.path``, the dotted path of enclosing tasks and tools.",
)
agent = EntityDecorator(
    "agent", "Trace a function as an agent; like a workflow, it names the spans inside it."
)
tool = EntityDecorator(
    "tool", "Trace a function as a tool an agent calls; like a task, it extends the path."
)
