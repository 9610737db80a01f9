"""The dispatcher's slot accounting alone: it never lets more than ``concurrency`` items be held."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from bdurable.services.dispatcher.slots import SlotLimiter


def test_claims_and_hand_offs_share_the_concurrency() -> None:
    slots = SlotLimiter(4, batch=64)
    slots.accepting = True
    assert slots.free() == 4
    slots.reserve(3)  # a claim of 3 in flight
    assert slots.free() == 1
    assert slots.handoff_budget() == 2  # the committing item's own slot, plus the one free
    for _ in range(2):
        slots.started()
    slots.release(3)  # the claim brought 2 items; its third slot is free again
    assert slots.free() == 2


def test_nothing_is_free_while_a_suspect_runs_alone_or_while_draining() -> None:
    slots = SlotLimiter(10, batch=64)
    slots.accepting = True
    slots.exclusive = True
    assert (slots.free(), slots.handoff_budget()) == (0, 0)
    slots.exclusive = False
    slots.accepting = False
    assert slots.handoff_budget() == 0
    assert slots.free() == 10


@given(st.integers(1, 20), st.lists(st.tuples(st.sampled_from(["claim", "handoff", "finish"]), st.integers(0, 30))))
def test_held_items_never_exceed_the_concurrency(concurrency: int, events: list[tuple[str, int]]) -> None:
    """Whatever order claims, hand-offs and finishes come in, if each only takes what it was granted, the
    dispatcher never holds more than its concurrency (the invariant the claim loop and commits rely on)."""
    slots = SlotLimiter(concurrency, batch=8)
    slots.accepting = True
    rng = random.Random(concurrency)
    for kind, amount in events:
        if kind == "claim":
            budget = min(slots.free(), slots.batch)
            slots.reserve(budget)
            taken = min(budget, amount)
            for _ in range(taken):
                slots.started()
            slots.release(budget)
        elif kind == "handoff" and slots.running > 0:
            budget = slots.handoff_budget()  # asked by a running item that commits
            slots.reserve(max(0, budget - 1))
            slots.finished()  # the committing item ends...
            for _ in range(min(budget, rng.randint(0, budget))):
                slots.started()  # ...and what the commit handed off starts
            slots.release(max(0, budget - 1))
        elif kind == "finish" and slots.running > 0:
            slots.finished()
        assert 0 <= slots.running <= concurrency
        assert slots.reserved == 0
