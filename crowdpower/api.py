"""REST API v1: bearer project keys, JSON errors, cursor pagination (CONTRACT.md)."""

from __future__ import annotations

from flask import Blueprint, Flask, g, jsonify, request
from sqlalchemy import select

from crowdpower import segments as segment_service
from crowdpower.auth import api_error, api_key_required
from crowdpower.customers import customer_json, get_traits, upsert_customer
from crowdpower.extensions import csrf, db
from crowdpower.models import Customer, Event, EventDefinition, Segment, TraitDefinition
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


def page_args() -> tuple[int, int | None]:
    """``limit`` (1–100, default 20) and ``starting_after`` (an id) from the query string."""
    try:
        limit = int(request.args.get("limit", 20))
    except ValueError:
        raise ApiError(400, "invalid_limit", "limit must be an integer from 1 to 100.") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, "invalid_limit", "limit must be an integer from 1 to 100.")
    after = request.args.get("starting_after")
    if after is None or after == "":
        return limit, None
    try:
        return limit, int(after)
    except ValueError:
        raise ApiError(400, "invalid_cursor", "starting_after must be an id.") from None


def paginate(stmt, id_column, limit: int, after: int | None) -> tuple[list, bool]:
    """Newest first by id; ``starting_after`` continues after that id."""
    if after is not None:
        stmt = stmt.where(id_column < after)
    rows = list(db.session.scalars(stmt.order_by(id_column.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def json_body() -> dict:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "The body must be a JSON object.")
    return data


@bp.get("/customers")
@api_key_required
def list_customers():
    limit, after = page_args()
    pid = g.project.id
    stmt = select(Customer).where(Customer.project_id == pid)
    email = request.args.get("email")
    if email:
        stmt = stmt.where(Customer.email_key == Customer.normalise_email(email))
    segment_id = request.args.get("segment")
    if segment_id:
        segment = get_or_404(Segment, segment_id, pid)
        stmt = stmt.where(segment_service.condition(segment))
    rows, more = paginate(stmt, Customer.id, limit, after)
    traits = get_traits(pid, [c.id for c in rows])
    return jsonify({"data": [customer_json(c, traits[c.id]) for c in rows], "has_more": more})


@bp.post("/customers")
@api_key_required
def create_customer():
    data = json_body()
    email = data.get("email")
    if not isinstance(email, str) or "@" not in email or len(email) > 320:
        raise ApiError(400, "invalid_email", "email must be a valid email address.")
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        raise ApiError(400, "invalid_name", "name must be a string.")
    traits = data.get("traits") or {}
    if not isinstance(traits, dict) or not all(isinstance(k, str) and k for k in traits):
        raise ApiError(400, "invalid_traits", "traits must be an object of name → value.")
    customer, created = upsert_customer(g.project.id, email, name, traits, source="api")
    db.session.commit()
    body = customer_json(customer, get_traits(g.project.id, [customer.id])[customer.id])
    return jsonify(body), 201 if created else 200


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


def event_json(event: Event) -> dict:
    return {"id": event.id, "name": event.name, "properties": event.properties,
            "occurred_at": event.occurred_at.isoformat().replace("+00:00", "Z"),
            "source": event.source}


@bp.get("/segments")
@api_key_required
def list_segments():
    return jsonify({"data": [
        {"id": s.id, "name": s.name, "description": s.description, "rules": s.rules,
         "source": s.source, "customer_count": count}
        for s, count in segment_service.with_counts(g.project.id)], "has_more": False})


@bp.get("/segments/<segment_id>")
@api_key_required
def get_segment(segment_id):
    s = get_or_404(Segment, segment_id, g.project.id)
    return jsonify({"id": s.id, "name": s.name, "description": s.description, "rules": s.rules,
                    "source": s.source, "customer_count": segment_service.count(s)})


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
    return jsonify({"data": [{"id": d.id, "key": d.key, "name": d.name, "type": d.type,
                              "description": d.description, "source": d.source} for d in rows],
                    "has_more": False})
