"""REST API v1: bearer project keys, JSON errors, cursor pagination (CONTRACT.md)."""

from __future__ import annotations

import math
import re
from typing import Any

from flask import Blueprint, Flask, g, jsonify, request
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from crowdpower import inputs, schemas
from crowdpower import segments as segment_service
from crowdpower.auth import api_error, api_key_required
from crowdpower.customers import customer_json, get_traits, record_event, upsert_customer
from crowdpower.definitions import trait_specs
from crowdpower.extensions import csrf, db
from crowdpower.formatting import trait_format
from crowdpower.isotime import iso
from crowdpower.models import Customer, Event, EventDefinition, Segment, TraitDefinition
from crowdpower.rules import RuleError
from crowdpower.tenancy import get_or_404

bp = Blueprint("api", __name__, url_prefix="/api/v1")
MAX_LIMIT = 100


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def init_app(app: Flask) -> None:
    csrf.exempt(bp)
    app.register_blueprint(bp)


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError):
    return api_error(exc.status, exc.code, exc.message)


@bp.errorhandler(405)
def _method_not_allowed(_exc):
    return api_error(405, "method_not_allowed", "Method not allowed on this resource.")


def page_args(model: type[schemas.Page] = schemas.Page) -> tuple[int, int | None]:
    """``limit`` (1–100, default 20) and ``starting_after`` (an id) from the query string."""
    page = query_args(model)
    return page.limit, page.starting_after


def query_args(model: type[schemas._Query]):
    """The query string as ``model`` (pydantic); a 400 ``invalid_<arg>`` if it does not fit."""
    try:
        return schemas.parse(model, request.args.to_dict())
    except schemas.Invalid as exc:
        raise ApiError(400, exc.code, exc.message) from None


def body_as(model: type[schemas._Body]):
    """The JSON body as ``model`` (pydantic); a 400 ``invalid_<field>`` if it does not fit."""
    try:
        return schemas.parse(model, json_body())
    except schemas.Invalid as exc:
        raise ApiError(400, exc.code, exc.message) from None


def paginate(stmt, id_column, limit: int, after: int | None) -> tuple[list, bool]:
    """Newest first by id; ``starting_after`` continues after that id."""
    if after is not None:
        stmt = stmt.where(id_column < after)
    rows = list(db.session.scalars(stmt.order_by(id_column.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def json_body() -> dict:
    """The request's JSON object, through the strict parser (``crowdpower.inputs``)."""
    try:
        data = inputs.parse_json(request.get_data(cache=True))
    except inputs.BadInput as exc:
        code = f"invalid_{exc.field}" if exc.field else "invalid_json"
        raise ApiError(400, code, str(exc)) from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "The body must be a JSON object.")
    return data


@bp.get("/customers")
@api_key_required
def list_customers():
    args = query_args(schemas.CustomerQuery)
    pid = g.project.id
    stmt = select(Customer).where(Customer.project_id == pid)
    if args.email:
        stmt = stmt.where(Customer.email_key == Customer.normalise_email(args.email))
    if args.segment:
        segment = get_or_404(Segment, args.segment, pid)
        stmt = stmt.where(segment_service.condition(segment))
    rows, more = paginate(stmt, Customer.id, args.limit, args.starting_after)
    traits = get_traits(pid, [c.id for c in rows])
    return jsonify({"data": [customer_json(c, traits[c.id]) for c in rows], "has_more": more})


@bp.post("/customers")
@api_key_required
def create_customer():
    body = body_as(schemas.CustomerBody)
    traits = check_traits(body.traits or {})
    customer, created = upsert_customer(g.project.id, body.email, body.name, traits,
                                        source="api")
    define_traits(g.project.id, traits)
    db.session.commit()
    body = customer_json(customer, get_traits(g.project.id, [customer.id])[customer.id])
    return jsonify(body), 201 if created else 200


ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}"
                      r"([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$")


def _scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)  # JSON parsing accepts NaN/Infinity; databases do not
    return isinstance(value, str | int | bool)


def check_traits(traits: Any) -> dict:
    """Trait values are strings, numbers, booleans (dates as ISO strings), lists of those,
    or null (removes the trait); keys fit the ``trait_values.key`` column."""
    if not isinstance(traits, dict):
        raise ApiError(400, "invalid_traits", "traits must be an object of name → value.")
    for key, value in traits.items():
        if not key or len(key) > 100:
            raise ApiError(400, "invalid_traits", "trait names are 1 to 100 characters.")
        if not (value is None or _scalar(value)
                or (isinstance(value, list) and all(_scalar(v) for v in value))):
            raise ApiError(400, "invalid_traits",
                           f"trait {key!r} must be a string, number, boolean, date string, "
                           "list of those, or null.")
    return traits


def trait_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "list"
    return "date" if ISO_DATE.match(value) else "string"


def define_traits(project_id: int, traits: dict) -> None:
    """Add a definition (type inferred from the first value seen) for each new trait key,
    so ``/trait-definitions`` lists what the project has; concurrent writers are fine."""
    rows = [{"project_id": project_id, "key": k, "name": k, "type": trait_type(v),
             "description": "", "source": "api"} for k, v in traits.items() if v is not None]
    if not rows:
        return
    insert = postgresql.insert if db.engine.dialect.name == "postgresql" else sqlite.insert
    db.session.execute(insert(TraitDefinition).values(rows).on_conflict_do_nothing(
        index_elements=["project_id", "key"]))


@bp.get("/customers/<customer_id>")
@api_key_required
def get_customer(customer_id):
    customer = get_or_404(Customer, customer_id, g.project.id)
    return jsonify(customer_json(customer, get_traits(g.project.id, [customer.id])[customer.id]))


@bp.get("/customers/<customer_id>/events")
@api_key_required
def customer_events(customer_id):
    customer = get_or_404(Customer, customer_id, g.project.id)
    limit, after = page_args()
    stmt = select(Event).where(Event.project_id == g.project.id, Event.customer_id == customer.id)
    if after is not None:
        anchor = db.session.get(Event, after)
        if anchor is None or anchor.customer_id != customer.id:
            raise ApiError(400, "invalid_cursor", "starting_after is not an event of this customer.")
        stmt = stmt.where((Event.occurred_at < anchor.occurred_at)
                          | ((Event.occurred_at == anchor.occurred_at) & (Event.id < anchor.id)))
    rows = list(db.session.scalars(
        stmt.order_by(Event.occurred_at.desc(), Event.id.desc()).limit(limit + 1)))
    return jsonify({"data": [event_json(e) for e in rows[:limit]], "has_more": len(rows) > limit})


@bp.post("/customers/<customer_id>/events")
@api_key_required
def track_event(customer_id):
    """Record an event; 201, or 200 with the earlier event when ``external_id`` repeats."""
    customer = get_or_404(Customer, customer_id, g.project.id)
    body = body_as(schemas.EventBody)
    external_id = body.external_id
    event = record_event(g.project.id, customer.id, body.name, body.properties or {},
                         occurred_at=body.occurred_at, source="api", external_id=external_id)
    db.session.commit()
    if event is None:
        event = db.session.scalar(select(Event).where(
            Event.project_id == g.project.id, Event.external_id == external_id))
        return jsonify(event_json(event)), 200
    return jsonify(event_json(event)), 201


def event_json(event: Event) -> dict:
    return {"id": event.id, "name": event.name, "properties": event.properties,
            "occurred_at": iso(event.occurred_at),
            "source": event.source}


@bp.get("/segments")
@api_key_required
def list_segments():
    return jsonify({"data": [segment_json(s, count)
                             for s, count in segment_service.with_counts(g.project.id)],
                    "has_more": False})


@bp.post("/segments")
@api_key_required
def create_segment():
    """A custom segment; a rule the language does not accept is a 400 saying why."""
    data = json_body()
    try:
        segment = segment_service.create(g.project.id, data.get("name"), data.get("rules"),
                                         data.get("description") or "")
    except segment_service.DuplicateSegment as exc:
        raise ApiError(409, "segment_exists", str(exc)) from None
    except RuleError as exc:
        raise ApiError(400, "invalid_rules", str(exc)) from None
    db.session.commit()
    return jsonify(segment_json(segment, segment_service.count(segment))), 201


def segment_json(s: Segment, count: int) -> dict:
    return {"id": s.id, "name": s.name, "description": s.description, "rules": s.rules,
            "source": s.source, "customer_count": count}


@bp.get("/segments/<segment_id>")
@api_key_required
def get_segment(segment_id):
    s = get_or_404(Segment, segment_id, g.project.id)
    return jsonify(segment_json(s, segment_service.count(s)))


@bp.get("/event-definitions")
@api_key_required
def event_definitions():
    rows = db.session.scalars(select(EventDefinition).where(
        EventDefinition.project_id == g.project.id).order_by(EventDefinition.id))
    return jsonify({"data": [{"id": d.id, "name": d.name, "description": d.description,
                              "properties": d.properties, "source": d.source} for d in rows],
                    "has_more": False})


@bp.get("/trait-definitions")
@api_key_required
def trait_definitions():
    rows = db.session.scalars(select(TraitDefinition).where(
        TraitDefinition.project_id == g.project.id).order_by(TraitDefinition.id))
    specs = trait_specs(g.project.id)  # formats declared by the plugins
    return jsonify({"data": [{"id": d.id, "key": d.key, "name": d.name, "type": d.type,
                              "description": d.description, "source": d.source,
                              "format": trait_format(specs.get(d.key)) or "text",
                              "currency_trait": specs.get(d.key, {}).get("currency_trait")}
                             for d in rows],
                    "has_more": False})
