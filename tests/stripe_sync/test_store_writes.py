"""The mirror's bulk write of an initial sync: a fresh kind is COPYed straight in, and
an object a webhook stored meanwhile (newer) survives (the batch falls back to the
guarded upsert)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from crowdpower.extensions import db
from crowdpower.plugins.stripe import store
from crowdpower.plugins.stripe.models import StripeObject
from crowdpower.tenancy import project_scope


def _customers(n: int, name: str) -> list[dict]:
    return [{"id": f"cus_{i:04d}", "object": "customer", "email": f"c{i}@example.com",
             "name": name, "created": 1_700_000_000 + i} for i in range(n)]


def _names(project_id: int) -> dict[str, str]:
    db.session.expire_all()
    return {sid: data["name"] for sid, data in db.session.execute(select(
        StripeObject.stripe_id, StripeObject.data).where(
        StripeObject.project_id == project_id, StripeObject.kind == "customer"))}


def test_fresh_batch_is_written_whole_and_a_newer_webhook_copy_wins(tenant, make_project):
    project_id, _key, _c = tenant
    other_id, _ = make_project("Globex")
    fetched = datetime.now(UTC)
    with project_scope(other_id):  # another project's objects never count as "there"
        store.upsert_objects(other_id, "customer", _customers(3, "theirs"), fetched)
        db.session.commit()
    with project_scope(project_id):
        assert not store.has_objects(project_id, "customer")
        assert store.upsert_pages(project_id, "customer",
                                  [(_customers(60, "sync"), fetched)], fresh=True) == 60
        db.session.commit()
        assert store.has_objects(project_id, "customer")
        assert set(_names(project_id).values()) == {"sync"} and len(_names(project_id)) == 60

    with project_scope(other_id):
        # A webhook stored cus_0005 after the page was fetched; the page (older) comes next.
        store.upsert_objects(other_id, "customer", [{**_customers(6, "webhook")[5]}],
                             fetched + timedelta(seconds=5))
        db.session.commit()
        written = store.upsert_pages(other_id, "customer",
                                     [(_customers(60, "sync"), fetched)], fresh=True)
        db.session.commit()
        names = _names(other_id)
    assert written == 60 and len(names) == 60
    assert names["cus_0005"] == "webhook"
    assert {n for sid, n in names.items() if sid != "cus_0005"} == {"sync"}
