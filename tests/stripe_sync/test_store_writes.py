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


def _sub(sub_id: str, product: str, name: str) -> dict:
    return {"id": sub_id, "object": "subscription", "customer": "cus_0001",
            "items": {"object": "list", "data": [{"id": f"si_{sub_id}", "price": {
                "id": f"price_{product}", "product": {"id": product, "object": "product",
                                                      "name": name}}}]}}


def _products(project_id: int) -> dict[str, tuple[str, datetime]]:
    db.session.expire_all()
    return {sid: (data["name"], at) for sid, data, at in db.session.execute(select(
        StripeObject.stripe_id, StripeObject.data, StripeObject.synced_at).where(
        StripeObject.project_id == project_id, StripeObject.kind == "product"))}


def test_subscription_pages_write_each_product_once_newest_copy_wins(tenant, make_project):
    """Products expanded in several pages of subscriptions are written in one go with the
    result page-by-page guarded writes give: of several copies the last of the newest
    wins, and a stored copy newer than all of them stays; other projects are untouched."""
    project_id, _key, _c = tenant
    other_id, _ = make_project("Globex")
    t = datetime(2026, 11, 1, tzinfo=UTC)
    with project_scope(other_id):
        store.upsert_objects(other_id, "product", [
            {"id": "prod_a", "object": "product", "name": "theirs"}], t)
        db.session.commit()
    with project_scope(project_id):
        store.upsert_objects(project_id, "product", [
            {"id": "prod_c", "object": "product", "name": "stored later"}],
            t + timedelta(seconds=9))
        db.session.commit()
        store.upsert_pages(project_id, "subscription", [
            ([_sub("sub_1", "prod_a", "a at 3"), _sub("sub_2", "prod_c", "c at 3")],
             t + timedelta(seconds=3)),
            ([_sub("sub_3", "prod_a", "a at 5, first")], t + timedelta(seconds=5)),
            ([_sub("sub_4", "prod_b", "b at 4")], t + timedelta(seconds=4)),
            ([_sub("sub_5", "prod_a", "a at 5, last")], t + timedelta(seconds=5)),
            ([_sub("sub_6", "prod_a", "a at 4")], t + timedelta(seconds=4))])
        db.session.commit()
        assert _products(project_id) == {
            "prod_a": ("a at 5, last", t + timedelta(seconds=5)),
            "prod_b": ("b at 4", t + timedelta(seconds=4)),
            "prod_c": ("stored later", t + timedelta(seconds=9))}
    with project_scope(other_id):
        assert _products(other_id) == {"prod_a": ("theirs", t)}
