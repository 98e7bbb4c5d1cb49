"""The export engine: how an ended span reaches an exporter, exactly once or counted.

Read it top-down:

1. `processor.AsyncBatchSpanProcessor` is what a ``TracerProvider`` calls. ``on_end``
   appends the span to a queue (no lock, no I/O) and wakes the export task only when a
   batch fills. Flushes and shutdowns are requests to the delivery, with a deadline.
2. `delivery.Delivery` owns every span's state: queued, in flight (an attempt running,
   or waiting to be retried), delivered, or dropped with a `records.Reason`. Batches keep
   their position and retry state (attempts, the time of the next one, their prepared
   payload), so flushes wait exactly for what was ended before them, and a batch can move
   between loops without losing its place. A batch has one holder at a time, so it is
   never handed to the exporter again while an earlier hand-over may still be running.
   What it keeps (counters, batches, hand-overs, waiting flushes) is in `records`.
3. `worker.ExportWorker` is the export task on one event loop: it takes batches, sends
   them through a `channels.Channel` (how that exporter is called: one attempt of an
   OTLP exporter whose retries the engine runs, an ``aexport`` coroutine, or a sync
   ``export()`` in a dedicated thread) and reports each outcome to the delivery. When its
   loop shuts down it finishes or cuts off what is in flight, gives what is queued one
   attempt, and hands the rest over.
4. `hosting.WorkerHost` decides which loop hosts the worker: the application's loop when
   spans end in coroutines, else the private `loop_thread.LoopThread`; it moves the worker
   when a loop closes, stops, or is about to block, and takes back what a dead loop held.
5. `simple.SimpleAsyncSpanProcessor` hands each span over as it ends, through the same
   machinery for async exporters.
"""

from .processor import AsyncBatchSpanProcessor
from .records import ProcessorStats, Reason
from .simple import SimpleAsyncSpanProcessor

__all__ = ["AsyncBatchSpanProcessor", "ProcessorStats", "Reason", "SimpleAsyncSpanProcessor"]
