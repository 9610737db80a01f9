"""The cyclic garbage collector of a role process, set for a long-lived server that allocates fast.

CPython's defaults suit short scripts. A busy dispatcher allocates a few thousand objects per workflow, and
with the defaults it spent a fifth to a third of its CPU in the collector: every full collection walked the
whole heap, the tens of thousands of objects made at import time (functions, classes, schemas) included, and
paused the process for 40-90 ms each time (``bench/run.py``: 12,000 one-task workflows drained by one dispatcher).

So a role process, once its app is imported and before it serves:

* collects once, then freezes what is alive (:func:`gc.freeze`): those objects live as long as the process, and
  the collector never walks them again (any of them that became cyclic garbage later would not be collected;
  modules, classes and functions do not);
* collects the young generation every 5,000 net allocations instead of 700 (the older generations keep their
  ratios, 10 and 10): the objects of a step or task in flight mostly die by reference counting before a
  collection sees them, instead of being walked and promoted while alive. A full collection then comes every
  500,000 net allocations at most often (70,000 before): cyclic garbage that reached the oldest generation waits
  longer to be freed, a bounded amount. Thresholds of 5,000/20/100 saved little more and paused longer.

Measured over a dispatcher's life (start, warm-up, 12,000 one-task workflows, drain): its time in the collector
fell from ~1,000 ms to ~450 ms, its longest pause from ~80 ms to ~40 ms, its peak RSS stayed within 2 MiB
(77 MiB); ``bench/run.py`` measures the drain with and without (performance.md, "Accelerators"). Only the role
commands do this: an embedded :class:`bdurable.Worker` leaves the collector of its host process as it is.
"""

from __future__ import annotations

import gc

__all__ = ["GC_THRESHOLDS", "settle_heap"]

GC_THRESHOLDS = (5_000, 10, 10)


def settle_heap() -> None:
    """Free what startup left behind, freeze the rest, and space the collections out (see the module)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
