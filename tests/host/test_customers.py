"""Customers, typed traits and idempotent events (the services every writer goes through)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from crowdpower.customers import (
    NewEvent,
    bulk_set_traits,
    find_by_email,
    get_traits,
    record_event,
    record_events,
    set_traits,
    upsert_customer,
)
from crowdpower.extensions import db
from crowdpower.models import Customer, Event, TraitValue
from crowdpower.tenancy import project_scope


@pytest.fixture
def project(app, make_project) -> int:
    return make_project("Acme")[0]


def test_email_is_unique_per_project_ignoring_case(project):
    with project_scope(project):
        first, created = upsert_customer(project, "Ann@Example.COM", "Ann")
        again, created_again = upsert_customer(project, "  ann@example.com ", None)
        db.session.commit()
        assert created and not created_again
        assert again.id == first.id and again.name == "Ann"
        assert first.email == "Ann@Example.COM" and first.email_key == "ann@example.com"
        assert find_by_email(project, "ANN@example.com").id == first.id


def test_database_refuses_a_second_row_with_the_same_email_key(project):
    with project_scope(project):
        upsert_customer(project, "ann@example.com")
        db.session.commit()
        db.session.add(Customer(project_id=project, email="ANN@example.com",
                                email_key="ann@example.com"))
        with pytest.raises(IntegrityError):
            db.session.commit()
        db.session.rollback()


def test_same_email_in_two_projects_is_two_customers(project, make_project):
    other = make_project("Globex")[0]
    with project_scope(project):
        mine, _ = upsert_customer(project, "ann@example.com")
    with project_scope(other):
        theirs, created = upsert_customer(other, "ANN@example.com")
    db.session.commit()
    assert created and mine.id != theirs.id
    with project_scope(project):
        assert find_by_email(project, "ann@example.com").id == mine.id


def test_email_may_be_absent_for_many_customers(project):
    with project_scope(project):
        db.session.add_all([Customer(project_id=project, name=f"No email {i}") for i in range(3)])
        db.session.commit()
        a, created = upsert_customer(project, None, "Still none")
        db.session.commit()
        assert created and a.email is None and a.email_key is None
        assert find_by_email(project, None) is None and find_by_email(project, " ") is None
        assert db.session.scalar(select(func.count()).select_from(Customer)) == 4


def test_traits_keep_their_type(project, add_customer):
    when = datetime(2024, 3, 5, 14, 30, tzinfo=UTC)
    cid = add_customer(project, "ann@example.com", {
        "plan": "pro", "seats": 12, "mrr": 19.99, "vip": True, "trial": False,
        "signed_up_at": when, "renews_on": "2024-04-01", "tags": ["a", "b"]})
    traits = get_traits(project, [cid])[cid]
    assert traits == {"plan": "pro", "seats": 12, "mrr": 19.99, "vip": True, "trial": False,
                      "signed_up_at": "2024-03-05T14:30:00Z", "renews_on": "2024-04-01",
                      "tags": ["a", "b"]}
    assert type(traits["seats"]) is int and type(traits["vip"]) is bool
    with project_scope(project):
        rows = {r.key: (r.value_text, r.value_num) for r in db.session.scalars(
            select(TraitValue).where(TraitValue.customer_id == cid))}
    assert rows["plan"] == ("pro", None)
    assert rows["seats"] == (None, 12.0) and rows["mrr"] == (None, 19.99)
    assert rows["vip"] == ("true", None) and rows["trial"] == ("false", None)
    assert rows["signed_up_at"] == ("2024-03-05T14:30:00Z", None)  # sortable ISO text
    assert rows["tags"] == (None, None)


def test_a_date_trait_in_another_timezone_is_stored_in_utc(project, add_customer):
    local = datetime(2024, 3, 5, 18, 30, tzinfo=timezone(timedelta(hours=2)))
    cid = add_customer(project, "ann@example.com", {"seen_at": local})
    assert get_traits(project, [cid])[cid]["seen_at"] == "2024-03-05T16:30:00Z"


def test_overwriting_a_trait_changes_its_type_and_none_removes_it(project, add_customer):
    cid = add_customer(project, "ann@example.com", {"score": "high", "plan": "pro"})
    with project_scope(project):
        set_traits(project, cid, {"score": 7, "plan": None})
        db.session.commit()
        row = db.session.scalar(select(TraitValue).where(TraitValue.customer_id == cid,
                                                         TraitValue.key == "score"))
        assert (row.value, row.value_text, row.value_num) == (7, None, 7.0)
    assert get_traits(project, [cid])[cid] == {"score": 7}


def test_bulk_traits_for_many_customers(project, add_customer):
    ids = [add_customer(project, f"c{i}@example.com") for i in range(5)]
    with project_scope(project):
        written = bulk_set_traits(project, [(cid, {"n": i, "even": i % 2 == 0})
                                            for i, cid in enumerate(ids)], source="import")
        db.session.commit()
    assert written == 10
    traits = get_traits(project, ids)
    assert [traits[cid]["n"] for cid in ids] == [0, 1, 2, 3, 4]
    assert get_traits(project, []) == {}


def test_bulk_traits_new_keys_in_bulk_and_again(project, add_customer):
    """Enough new keys for the COPY path on PostgreSQL, then a second pass that changes
    half of them (the upsert path), then ``insert_new`` told a stored key is new (as when
    a concurrent writer got there first): it falls back to the upsert, nothing is lost."""
    from crowdpower import bulk

    ids = [add_customer(project, f"b{i}@example.com") for i in range(40)]
    with project_scope(project):
        written = bulk_set_traits(project, [(cid, {"n": i, "k": "x"})
                                            for i, cid in enumerate(ids)], source="import")
        db.session.commit()
        assert written == 80
        written = bulk_set_traits(project, [(cid, {"n": i * (i % 2), "k": "x"})
                                            for i, cid in enumerate(ids)], source="import")
        db.session.commit()
        assert written == 19  # odd i keep n == i; even i (but 0) change to 0
        now = datetime.now(UTC)
        rows = [{"project_id": project, "customer_id": cid, "key": key, "value": value,
                 "value_text": value if isinstance(value, str) else None,
                 "value_num": value if isinstance(value, int) else None,
                 "source": "import", "updated_at": now}
                for cid in ids for key, value in (("k", "y"), ("m", 1))]
        bulk.insert_new(TraitValue.__table__, rows, ["customer_id", "key"],
                        ["value", "value_text", "value_num", "source", "updated_at"])
        db.session.commit()
    traits = get_traits(project, ids)
    assert [traits[cid]["n"] for cid in ids] == [i * (i % 2) for i in range(40)]
    assert {traits[cid]["k"] for cid in ids} == {"y"} and {traits[cid]["m"] for cid in ids} \
        == {1}


AWKWARD_JSON = [
    "tab\there, newline\nthere, backslash \\ and \\N, quote \" and ünïcødé ✓",
    {"nested": {"list": [1, 2.5, None, True, "x\ty"]}, "empty": {}},
    [], 0, -1.25, "", False,
]
BIG_JSON = [10**30, {"big": 2**70}]  # PostgreSQL keeps them exact; SQLite's JSON does not


def test_json_values_copied_in_bulk_are_stored_exactly(project, add_customer):
    """Enough rows for COPY on PostgreSQL (straight, then through the upsert's temporary
    table), with values COPY's text format must escape and integers beyond 64 bits (which
    orjson refuses: the stdlib encodes them); trait documents with dates and big numbers."""
    from crowdpower import bulk

    awkward = AWKWARD_JSON + (BIG_JSON if db.engine.dialect.name == "postgresql" else [])
    ids = [add_customer(project, f"j{i}@example.com") for i in range(60)]
    update = ["value", "value_text", "value_num", "source", "updated_at"]

    def rows(key: str, shift: int) -> list[dict]:
        now = datetime.now(UTC)
        return [{"project_id": project, "customer_id": cid, "key": key,
                 "value": awkward[(i + shift) % len(awkward)], "value_text": None,
                 "value_num": None, "source": "import", "updated_at": now}
                for i, cid in enumerate(ids)]

    with project_scope(project):
        bulk.insert_new(TraitValue.__table__, rows("a", 0), ["customer_id", "key"], update)
        bulk.upsert(TraitValue.__table__, rows("a", 1), ["customer_id", "key"], update)
        bulk.upsert(TraitValue.__table__, rows("b", 2), ["customer_id", "key"], update)
        when = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
        bulk_set_traits(project, [(cid, {"c": awkward[i % len(awkward)],
                                         "at": when}) for i, cid in enumerate(ids)])
        db.session.commit()
    traits = get_traits(project, ids)
    n = len(awkward)
    assert [traits[cid]["a"] for cid in ids] == [awkward[(i + 1) % n]
                                                 for i in range(60)]
    assert [traits[cid]["b"] for cid in ids] == [awkward[(i + 2) % n]
                                                 for i in range(60)]
    assert [traits[cid]["c"] for cid in ids] == [awkward[i % n] for i in range(60)]
    assert {traits[cid]["at"] for cid in ids} == {"2026-03-04T05:06:07Z"}


def test_events_are_idempotent_on_external_id_per_project(project, make_project, add_customer):
    other = make_project("Globex")[0]
    mine = add_customer(project, "ann@example.com")
    theirs = add_customer(other, "ann@example.com")
    with project_scope(project):
        first = record_event(project, mine, "Paid", {"amount": 10}, external_id="evt_1")
        again = record_event(project, mine, "Paid", {"amount": 10}, external_id="evt_1")
        db.session.commit()
        assert first is not None and again is None
    with project_scope(other):
        elsewhere = record_event(other, theirs, "Paid", external_id="evt_1")
        db.session.commit()
        assert elsewhere is not None
    with project_scope(project):
        # events without an external id are never deduplicated
        record_event(project, mine, "Visited")
        record_event(project, mine, "Visited")
        db.session.commit()
        assert db.session.scalar(select(func.count()).select_from(Event)) == 3


def test_database_refuses_a_duplicate_external_id(project, add_customer):
    cid = add_customer(project, "ann@example.com")
    with project_scope(project):
        record_event(project, cid, "Paid", external_id="evt_9")
        db.session.commit()
        db.session.add(Event(project_id=project, customer_id=cid, name="Paid",
                             external_id="evt_9"))
        with pytest.raises(IntegrityError):
            db.session.commit()
        db.session.rollback()


def test_event_properties_are_stored_as_json(project, add_customer):
    cid = add_customer(project, "ann@example.com")
    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    with project_scope(project):
        event = record_event(project, cid, "Paid", {"amount": 10.5, "at": when, "ok": True},
                             occurred_at=when, source="stripe")
        db.session.commit()
        db.session.expire_all()
        event = db.session.get(Event, event.id)
    assert event.properties == {"amount": 10.5, "at": str(when), "ok": True}
    assert event.occurred_at == when and event.source == "stripe"


def test_times_in_another_timezone_are_stored_as_the_same_instant(project, add_customer):
    """SQLite keeps only wall-clock digits: 10:00+02:00 must be stored as 08:00 UTC."""
    cid = add_customer(project, "ann@example.com")
    local = datetime(2024, 5, 1, 10, 0, tzinfo=timezone(timedelta(hours=2)))
    with project_scope(project):
        event_id = record_event(project, cid, "Paid", occurred_at=local).id
        db.session.commit()
        db.session.expire_all()
        stored = db.session.get(Event, event_id).occurred_at
    assert stored == local and stored.utcoffset() == timedelta(0)
    assert stored.hour == 8


def test_bulk_traits_typed_copies_unchanged_skipped_and_nulls_deleted(project, add_customer):
    """Enough customers for a large batch: every value type gets the typed copies a rule
    reads, an unchanged value is not rewritten (its ``updated_at`` stays), a new source
    is, ``None`` deletes (or does nothing for a key never set), and a customer listed
    twice keeps the later values."""
    ids = [add_customer(project, f"t{i}@example.com") for i in range(60)]
    long = "x" * 600
    seen = datetime(2024, 3, 5, 18, 30, tzinfo=UTC)
    first = {"s": "pro", "b": True, "f": False, "i": 3, "x": 2.5, "l": ["a", 1],
             "d": {"k": "v"}, "long": long, "at": seen, "gone": "soon"}
    with project_scope(project):
        assert bulk_set_traits(project, [(cid, first) for cid in ids], source="import") \
            == 10 * 60
        db.session.commit()
        stored = {(r.key): (r.value, r.value_text, r.value_num) for r in db.session.scalars(
            select(TraitValue).where(TraitValue.customer_id == ids[0]))}
        assert stored == {
            "s": ("pro", "pro", None), "b": (True, "true", None), "f": (False, "false", None),
            "i": (3, None, 3.0), "x": (2.5, None, 2.5), "l": (["a", 1], None, None),
            "d": ({"k": "v"}, None, None), "long": (long, long[:500], None),
            "at": ("2024-03-05T18:30:00Z", "2024-03-05T18:30:00Z", None),
            "gone": ("soon", "soon", None)}
        before = dict(db.session.execute(select(TraitValue.key, TraitValue.updated_at).where(
            TraitValue.customer_id == ids[1])).all())

        rows = [(cid, {"s": "pro", "i": 4, "gone": None, "never": None}) for cid in ids]
        rows.append((ids[1], {"s": "team"}))  # the same customer again: the later value wins
        assert bulk_set_traits(project, rows, source="import") == 60 + 1
        db.session.commit()
        assert bulk_set_traits(project, [(ids[2], {"s": "pro"})], source="api") == 1
        db.session.commit()
        db.session.expire_all()
        after = {r.key: r for r in db.session.scalars(
            select(TraitValue).where(TraitValue.customer_id == ids[1]))}
        assert after["b"].updated_at == before["b"] and after["s"].value == "team"
        assert (after["i"].value, after["i"].value_num) == (4, 4.0)
        assert "gone" not in after and "never" not in after
        assert db.session.scalar(select(TraitValue.source).where(
            TraitValue.customer_id == ids[2], TraitValue.key == "s")) == "api"
        assert db.session.scalar(select(func.count()).select_from(TraitValue).where(
            TraitValue.key == "gone")) == 0
    assert get_traits(project, [ids[3]])[ids[3]]["s"] == "pro"


def test_record_events_batch_ids_in_order_taken_and_repeated_ids_skipped(project, add_customer,
                                                                          make_project):
    """A batch of keyed events: ids in the batch's order, an external id recorded before
    (or by another project: still free here) or repeated in the batch is skipped (the
    first copy wins), properties keep their JSON (datetimes as text), a naive time is UTC."""
    ann = add_customer(project, "ann@example.com")
    other, _ = make_project("Globex")
    theirs = add_customer(other, "ann@example.com")
    at = datetime(2026, 11, 3, 10, 30, tzinfo=UTC)
    with project_scope(other):
        record_events(other, [NewEvent(theirs, "Paid", external_id="evt_2")])
        db.session.commit()
    with project_scope(project):
        record_event(project, ann, "Paid", {"n": 0}, external_id="evt_1")
        db.session.commit()
        out = record_events(project, [
            NewEvent(ann, "Paid", {"n": 1}, occurred_at=at, source="stripe",
                     external_id="evt_1"),
            NewEvent(ann, "Paid", {"n": 2, "when": at, "nested": {"l": [1, None]}},
                     occurred_at=at.replace(tzinfo=None) + timedelta(hours=1),
                     source="stripe", external_id="evt_2"),
            NewEvent(ann, "Refunded", {"n": 3}, occurred_at=at, external_id="evt_3"),
            NewEvent(ann, "Paid", {"n": 4}, occurred_at=at, external_id="evt_2"),
            NewEvent(ann, "Visited", None, occurred_at=at)])
        db.session.commit()
        assert out[0] is None and out[3] is None
        assert out[1] < out[2] < out[4]
        rows = {e.id: e for e in db.session.scalars(select(Event).where(
            Event.project_id == project, Event.id.in_(out[1:3] + out[4:])))}
        second, third, visit = rows[out[1]], rows[out[2]], rows[out[4]]
        assert (second.name, second.source, second.external_id) == ("Paid", "stripe", "evt_2")
        assert second.properties == {"n": 2, "when": str(at), "nested": {"l": [1, None]}}
        assert second.occurred_at == at + timedelta(hours=1)
        assert (third.name, third.properties, third.occurred_at) == ("Refunded", {"n": 3}, at)
        assert (visit.properties, visit.external_id) == ({}, None)
        assert second.recorded_at == third.recorded_at
        assert db.session.scalar(select(func.count()).select_from(Event).where(
            Event.project_id == project)) == 4
