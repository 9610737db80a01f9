"""The cyclic garbage collector of a role process, set for a long-lived server that allocates fast.

CPython's defaults suit short scripts. A busy dispatcher allocates a few thousand objects per workflow, and with
the defaults it spent a fifth of its CPU in the collector: every full collection walked the whole heap, the
tens of thousands of objects made at import time (functions, classes, schemas) included, and paused the
process for 40-70 ms each time (``bench/run.py``: 12,000 one-task workflows drained by one dispatcher).

So a role process, once its app is imported and before it serves:

* collects once, then freezes what is alive (:func:`gc.freeze`): those objects live as long as the process, and
  the collector never walks them again (any of them that became cyclic garbage later would not be collected;
  modules, classes and functions do not);
* collects the young generation every 5,000 net allocations instead of 700, and the older ones 20 and 100 times
  less often than that (instead of 10 and 10): a workflow's objects mostly die young, by reference counting,
  before any collection sees them. Cyclic garbage waits a little longer to be freed; memory stays bounded.

Measured over a dispatcher's life (start, warm-up, 12,000 workflows, drain), both together cut its time in the
collector from ~690 ms to ~340 ms, and its longest pause from ~60 ms to ~25 ms; ``bench/run.py`` measures the
drain with and without. Only the role commands do this: an embedded :class:`bdurable.Worker` leaves the
collector of its host process as it is.
"""

from __future__ import annotations

import gc

__all__ = ["GC_THRESHOLDS", "settle_heap"]

GC_THRESHOLDS = (5_000, 20, 100)


def settle_heap() -> None:
    """Free what startup left behind, freeze the rest, and space the collections out (see the module)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
