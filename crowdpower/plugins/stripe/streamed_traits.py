"""Which customers' traits a sync can compute while its lists are still being fetched.

Stripe lists newest first, and a customer's subscriptions, charges and disputes are created
after the customer (Stripe needs the customer to exist to attach them). So once every list
this slice is fetching has been written down to objects created at or before some time
(its *mark*: the ``created`` of the oldest object written; ``-inf`` once the list is done),
a customer created after the highest mark has every object in the mirror, and its traits
can be computed now, overlapping the fetches, instead of after the last page.

The rule can be broken (a charge attached to a customer later, or an older Stripe
customer with the same email linked to an already computed CrowdPower customer), so any
object written for a computed customer afterwards makes it *dirty*: the traits phase
recomputes it. The traits phase also computes every customer not computed here, so the
result is the same function of the mirror as without streaming; this only saves work.
All of it is in memory for one slice (a resumed run recomputes in its traits phase).
"""

from __future__ import annotations

import math
from collections import deque

from crowdpower.plugins.stripe.store import customer_id_of

OWNED = ("customer", "subscription", "charge", "dispute")  # objects traits are made of
CATALOGUE = ("product", "price")  # plan names and tiers: complete before any traits


class StreamedTraits:
    """Bookkeeping of one slice's list phase: ``written`` after each committed flush,
    ``ready`` for the customers now complete, ``computed`` once their traits are written."""

    def __init__(self, kinds: set[str]) -> None:
        """``kinds``: the kinds this slice lists (the others are already in the mirror)."""
        self.marks = {k: math.inf for k in OWNED if k in kinds}
        self.catalogue = {k for k in CATALOGUE if k in kinds}
        self.waiting: deque[tuple[int, int]] = deque()  # (created, customer id), newest first
        self.queued: set[int] = set()    # being computed (on the helper thread)
        self.seen: set[str] = set()      # Stripe customers written to meanwhile
        self.done: set[int] = set()      # CrowdPower customers computed
        self.owner: dict[str, int] = {}  # their Stripe customers (for dirtiness)
        self.dirty: set[int] = set()

    def written(self, kind: str, objects: list[dict], more: bool,
                links: dict[str, int] | None = None) -> None:
        """A flush of ``kind`` was committed (``links``: Stripe → CrowdPower customer of the
        customers written)."""
        if kind in CATALOGUE:
            if not more:
                self.catalogue.discard(kind)
            return
        if self.queued:  # a computation may or may not have read these: checked after it
            self.seen.update(s for o in objects if (s := customer_id_of(o)))
        if kind == "customer":
            for obj in objects:
                owner = (links or {}).get(obj["id"])
                if owner is None:
                    continue  # deleted: linked to no one
                if owner in self.done or owner in self.queued:
                    self.dirty.add(owner)
                else:
                    self.waiting.append((obj.get("created") or 0, owner))
        else:
            for obj in objects:
                owner = self.owner.get(customer_id_of(obj) or "")
                if owner is not None:
                    self.dirty.add(owner)
        if kind in self.marks:
            if not more:
                self.marks[kind] = -math.inf
            elif objects:
                self.marks[kind] = objects[-1].get("created") or 0

    def ready(self) -> list[int]:
        """CrowdPower customers whose objects are all written (each returned once)."""
        if self.catalogue:
            return []
        mark = max(self.marks.values(), default=-math.inf)
        out = []
        while self.waiting and self.waiting[0][0] > mark:
            _created, owner = self.waiting.popleft()
            if owner not in self.done and owner not in self.queued:
                self.queued.add(owner)
                out.append(owner)
        return out

    def computed(self, customer_ids: list[int], owners: dict[str, int]) -> None:
        """Their traits were computed from the mirror and written (``owners``: their Stripe
        customers). Objects written for them while that ran make them dirty."""
        self.done.update(customer_ids)
        self.queued.difference_update(customer_ids)
        self.owner.update(owners)
        self.dirty.update(owners[s] for s in self.seen if s in owners)
        self.seen.clear()

    def skip(self) -> set[int]:
        """Customers the traits phase need not compute again."""
        return self.done - self.dirty
