"""The tenancy safety net: unscoped reads of tenant models fail, scoped reads are filtered."""

from __future__ import annotations

import pytest
from sqlalchemy import exists, func, select
from werkzeug.exceptions import NotFound

from crowdpower.extensions import db
from crowdpower.models import (
    Customer,
    Project,
    Segment,
    TraitValue,
)
from crowdpower.tenancy import (
    TenantMixin,
    UnscopedQueryError,
    get_by_id_and_project,
    get_or_404,
    project_scope,
    unscoped,
)


@pytest.fixture
def two_projects(app, make_project, add_customer):
    """Two projects with two customers each (with a trait); returns their ids."""
    a, _ = make_project("A")
    b, _ = make_project("B")
    ids = {a: [add_customer(a, f"{n}@a.test", {"plan": "pro"}) for n in ("ann", "amy")],
           b: [add_customer(b, f"{n}@b.test", {"plan": "pro"}) for n in ("bob", "ben")]}
    db.session.expunge_all()  # nothing cached: every read below goes to the database
    return a, b, ids


UNSCOPED_READS = {
    "entity": lambda: select(Customer),
    "column": lambda: select(Customer.id),
    "select_from": lambda: select(func.count()).select_from(Customer),
    "subquery": lambda: select(Project.id).where(
        exists(select(Customer.id).where(Customer.project_id == Project.id))),
    "join": lambda: select(Project.name).join(Segment, Segment.project_id == Project.id),
    "trait-values": lambda: select(TraitValue.key),
    "core-table": lambda: select(Customer.__table__.c.email),
}


def test_unscoped_read_of_a_tenant_model_raises(two_projects):
    for name, statement in UNSCOPED_READS.items():
        with pytest.raises(UnscopedQueryError, match="no project in scope"):
            db.session.execute(statement()).all()
            pytest.fail(f"{name}: read with no project in scope")


def test_unscoped_get_raises_and_explicit_unscoped_reads_everything(two_projects):
    a, b, ids = two_projects
    with pytest.raises(UnscopedQueryError):
        db.session.get(Customer, ids[a][0])
    with unscoped():
        assert db.session.scalar(select(func.count()).select_from(Customer)) == 4
    assert db.session.scalar(select(func.count()).select_from(Project)) == 2  # not a tenant


def test_project_scope_adds_the_project_filter(two_projects):
    a, b, ids = two_projects
    for project_id in (a, b, a):  # switching back and forth: no stale cached filter
        with project_scope(project_id):
            assert sorted(db.session.scalars(select(Customer.id))) == sorted(ids[project_id])
            assert db.session.scalar(select(func.count()).select_from(TraitValue)) == 2
            assert db.session.scalar(select(func.count()).select_from(Customer).where(
                exists(select(TraitValue.customer_id).where(
                    TraitValue.customer_id == Customer.id)))) == 2
            # a subquery over a tenant model inside a non-tenant query is filtered too
            assert db.session.scalar(select(func.count()).select_from(Project).where(
                exists(select(Customer.id).where(Customer.project_id == Project.id)))) == 1


def test_scoped_query_cannot_reach_another_project_even_by_id(two_projects):
    a, b, ids = two_projects
    with project_scope(a):
        assert db.session.scalars(select(Customer).where(Customer.id.in_(ids[b]))).all() == []
        assert db.session.get(Customer, ids[b][0]) is None


def test_get_or_404_never_returns_another_projects_row(two_projects):
    a, b, ids = two_projects
    assert get_or_404(Customer, ids[a][0], a).project_id == a
    assert get_or_404(Customer, str(ids[a][0]), a).id == ids[a][0]
    for bad in (ids[b][0], 999_999, "abc", None, "1.5"):
        with pytest.raises(NotFound):
            get_or_404(Customer, bad, a)


def test_get_or_404_checks_objects_already_in_the_session(two_projects):
    """The identity map answers ``session.get`` without SQL: the project check must hold."""
    a, b, ids = two_projects
    with unscoped():
        theirs = db.session.get(Customer, ids[b][0])
    assert theirs is not None
    with pytest.raises(NotFound):
        get_or_404(Customer, ids[b][0], a)
    assert get_by_id_and_project(Customer, ids[b][0], a) is None


def test_get_by_id_and_project(two_projects):
    a, b, ids = two_projects
    assert get_by_id_and_project(Customer, ids[b][1], b).email == "ben@b.test"
    assert get_by_id_and_project(Customer, ids[b][1], a) is None
    assert get_by_id_and_project(Customer, 424242, a) is None


def test_loaded_objects_stay_usable_after_commit_outside_the_scope(two_projects):
    """Refreshing an expired object is a primary-key fetch of a row already read."""
    a, _b, ids = two_projects
    with project_scope(a):
        customer = db.session.get(Customer, ids[a][0])
    db.session.commit()  # expires it
    assert customer.email == "ann@a.test"


# Tables with a project_id that are not tenant models, and why.
NOT_TENANT = {
    # the webhook inbox stores a delivery before its account is routed to a project
    "stripe_webhook_events",
}


def test_every_project_owned_table_is_a_tenant_model(app):
    """Enumerated from the metadata (host, internal and installed plugins' tables), so a
    new table with a ``project_id`` cannot escape the guard by being left off a list."""
    mapped = {m.local_table.name: m.class_ for m in db.Model.registry.mappers}
    tables = [t for t in db.metadata.sorted_tables if "project_id" in t.c]
    assert {"customers", "trait_values", "events", "memberships"} <= {t.name for t in tables}
    for table in tables:
        if table.name in NOT_TENANT:
            continue
        model = mapped[table.name]
        assert issubclass(model, TenantMixin), table.name
        assert not table.c.project_id.nullable, table.name
        with pytest.raises(UnscopedQueryError):
            db.session.execute(select(model).limit(1)).all()
    assert not issubclass(Project, TenantMixin)
