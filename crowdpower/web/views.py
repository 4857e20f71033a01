"""Web routes. Every project page goes through ``project_required`` (404 for non-members)."""

from __future__ import annotations

import functools
import json
import re
import secrets
from urllib.parse import unquote

from flask import flash, g, redirect, render_template, request, session, url_for
from sqlalchemy import func, select
from werkzeug.exceptions import HTTPException
from werkzeug.security import check_password_hash, generate_password_hash

from crowdpower import segments as segment_service
from crowdpower.auth import (
    api_error,
    end_sessions,
    login_required,
    project_required,
    start_session,
    user_projects,
)
from crowdpower.customers import get_traits
from crowdpower.definitions import event_specs, trait_specs
from crowdpower.extensions import db
from crowdpower.formatting import format_property, render_sentence
from crowdpower.models import Customer, Event, Segment, TraitValue, User, utcnow
from crowdpower.plugins import get_pm, installed_integrations
from crowdpower.rules import RuleError, compile_rule
from crowdpower.tenancy import get_or_404
from crowdpower.web import bp, display

PAGE = 50


def not_found(_exc: HTTPException):
    if request.path.startswith("/api/"):
        return api_error(404, "not_found", "No such resource.")
    return render_template("error.html", code=404, message="Not found."), 404


def forbidden(exc: HTTPException):
    if request.path.startswith("/api/"):
        from crowdpower.auth import api_error

        return api_error(403, "forbidden", exc.description or "Forbidden.")
    return render_template("error.html", code=403,
                           message="You do not have access to this page."), 403


FAVICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
           '<rect width="32" height="32" rx="7" fill="#4f46e5"/>'
           '<path d="M21 11.5a7 7 0 1 0 0 9" stroke="#fff" stroke-width="3.5" fill="none" '
           'stroke-linecap="round"/></svg>')


@bp.route("/favicon.ico")
@bp.route("/favicon.svg")
def favicon():
    """Browsers ask for /favicon.ico on every page: answer with our icon, not a 404."""
    return FAVICON, 200, {"Content-Type": "image/svg+xml",
                          "Cache-Control": "public, max-age=86400"}


def bad_request(exc: HTTPException):
    if request.path.startswith("/api/"):
        return api_error(400, "bad_request", exc.description or "Bad request.")
    return render_template("error.html", code=400, message=exc.description or "Bad request."), 400


def method_not_allowed(exc: HTTPException):
    if request.path.startswith("/api/"):
        response = api_error(405, "method_not_allowed", "Method not allowed on this resource.")
        response.headers["Allow"] = ", ".join(exc.valid_methods or [])
        return response
    return render_template("error.html", code=405, message="Method not allowed."), 405


def server_error(_exc):
    if request.path.startswith("/api/"):
        return api_error(500, "server_error", "Something went wrong on our side.")
    return render_template("error.html", code=500, message="Something went wrong."), 500


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Log in; failed attempts are throttled (``security.throttle_login``)."""
    error = None
    if request.method == "POST":
        email = (request.form.get("email") or "").strip().lower()
        password = request.form.get("password") or ""
        user = db.session.scalar(select(User).where(User.email == email)) \
            if email and len(email) <= 320 else None
        if user is None:
            check_password_hash(_dummy_hash(), password)  # as slow as a real check
            error = "Wrong email or password."
        elif not user.check_password(password):
            error = "Wrong email or password."
        else:
            start_session(user)
            target = request.args.get("next") or ""
            if not is_local_path(target):
                target = url_for("web.index")
            return redirect(target)
    return render_template("login.html", error=error), (401 if error else 200)


@functools.cache
def _dummy_hash() -> str:
    """A hash of nothing, checked for unknown emails so they answer as slowly as known
    ones (no account enumeration by timing)."""
    return generate_password_hash(secrets.token_hex(16))


_LOCAL_PATH = re.compile(r"^/(?![/\\])[A-Za-z0-9\-._~!$&'()*+,;=:@%/?]*$")


def is_local_path(target: str) -> bool:
    """A path on this site, strictly: one leading ``/``, then URL characters only.

    Browsers read ``//host``, ``/\\host`` and ``/<tab>/host`` as other sites (they drop
    tabs and newlines), so any control or space character, backslash, or a second
    leading slash after decoding, refuses the target."""
    if not _LOCAL_PATH.match(target):
        return False
    decoded = unquote(target)
    return not decoded.startswith(("//", "/\\")) and not any(
        c in decoded for c in "\\\t\r\n\x00")


@bp.post("/logout")
def logout():
    if g.get("user") is not None:
        end_sessions(g.user)
    session.clear()
    flash("You are logged out.")
    return redirect(url_for("web.login"))


@bp.route("/")
@login_required
def index():
    projects = user_projects(g.user)
    if len(projects) == 1:
        return redirect(url_for("web.integrations", project_id=projects[0].id))
    return render_template("projects.html", projects=projects)


@bp.route("/projects/<int:project_id>/integrations")
@project_required
def integrations(project_id: int):
    cards = []
    for info in installed_integrations():
        status = info["status"](project_id) if info.get("status") else {}
        cards.append({"info": info, "status": status})
    return render_template("integrations.html", cards=cards)


@bp.route("/projects/<int:project_id>/customers")
@project_required
def customers(project_id: int):
    """The customer list: total, sort, trait columns, filter by segment and a trait rule,
    numbered pages."""
    args = request.args
    query = (args.get("q") or "").strip().lower()
    segment_id = args.get("segment", type=int)
    stmt = select(Customer).where(Customer.project_id == project_id)
    segment = None
    if segment_id:
        segment = get_or_404(Segment, segment_id, project_id)
        stmt = stmt.where(segment_service.condition(segment))
    if query:
        stmt = stmt.where(
            func.lower(func.coalesce(Customer.email, "")).contains(query, autoescape=True)
            | func.lower(func.coalesce(Customer.name, "")).contains(query, autoescape=True))
    specs = trait_specs(project_id)
    rule_error = None
    trait_filter = {"trait": (args.get("trait") or "").strip(), "op": args.get("op") or "eq",
                    "value": args.get("value") or ""}
    if trait_filter["trait"]:
        try:
            stmt = stmt.where(compile_rule(
                {"all": [filter_leaf(**trait_filter)]}, project_id))
        except (RuleError, ValueError) as exc:
            rule_error = str(exc)
    before = args.get("before", type=int)
    if before:
        stmt = stmt.where(Customer.id < before)
    total = db.session.scalar(stmt.with_only_columns(func.count(Customer.id))) or 0
    declared = [c for batch in get_pm().hook.crowdpower_customer_columns(project_id=project_id)
                for c in batch or []]
    order = [c["trait"] for c in declared]
    chosen = sorted({k for k in args.getlist("col") if k in specs},
                    key=lambda k: (order.index(k) if k in order else len(order), k))[:8]
    columns = ([{"trait": k, "label": specs[k].get("name") or k,
                 "pill": any(c["trait"] == k and c.get("pill") for c in declared)}
                for k in chosen] if chosen else declared)
    sort = args.get("sort") or "newest"
    stmt = stmt.order_by(*customer_order(project_id, sort, specs))
    pages = max(1, -(-total // PAGE))
    page = min(max(1, args.get("page", default=1, type=int)), pages)
    rows = list(db.session.scalars(stmt.offset((page - 1) * PAGE).limit(PAGE)))
    traits = get_traits(project_id, [c.id for c in rows])
    keep = {k: v for k, v in {"q": query, "segment": segment_id, "sort": sort,
                              **(trait_filter if trait_filter["trait"] else {}),
                              "col": chosen or None}.items() if v}
    return render_template("customers.html", customers=rows, traits=traits, q=query,
                           segment=segment, columns=columns, identity=_identity(project_id),
                           total=total, page=page, pages=pages, sort=sort, specs=specs,
                           sorts=sort_options(columns, specs), trait_filter=trait_filter,
                           rule_error=rule_error, keep=keep, chosen=chosen,
                           segments=list(db.session.scalars(select(Segment).where(
                               Segment.project_id == project_id).order_by(Segment.name))),
                           more=page < pages)


FILTER_OPS = {"eq": "is", "neq": "is not", "gt": ">", "gte": "≥", "lt": "<", "lte": "≤",
              "exists": "is set", "not_exists": "is not set", "in": "is one of",
              "within_last": "within the last (days)"}


def filter_leaf(trait: str, op: str, value: str) -> dict:
    """The list's trait filter as a rule leaf (the segment rule language)."""
    if op not in FILTER_OPS:
        raise ValueError(f"unknown operator {op!r}")
    leaf: dict = {"trait": trait, "op": op}
    if op in ("exists", "not_exists"):
        return leaf
    raw = value.strip()

    def typed(v: str):
        try:
            return float(v) if any(ch in v for ch in ".eE") else int(v)
        except ValueError:
            return {"true": True, "false": False}.get(v, v)

    if op == "in":
        leaf["value"] = [typed(v.strip()) for v in raw.split(",") if v.strip()]
    else:
        leaf["value"] = typed(raw)
    return leaf


def sort_options(columns: list[dict], specs: dict) -> list[tuple[str, str]]:
    options = [("newest", "Newest first"), ("oldest", "Oldest first"),
               ("last_seen", "Last seen")]
    for column in columns:
        if specs.get(column["trait"], {}).get("type") in ("number", "date", "string"):
            options.append((f"trait:{column['trait']}", f"{column['label']} (highest first)"))
    return options


def customer_order(project_id: int, sort: str, specs: dict) -> list:
    """ORDER BY for a sort option; ids break ties so pages never overlap."""
    if sort == "oldest":
        return [Customer.id.asc()]
    if sort == "last_seen":
        seen = (select(func.max(Event.occurred_at)).where(
            Event.project_id == project_id, Event.customer_id == Customer.id)
            .correlate(Customer).scalar_subquery())
        return [seen.desc().nulls_last(), Customer.id.desc()]
    if sort.startswith("trait:") and sort[6:] in specs:
        key = sort[6:]
        column = TraitValue.value_num if specs[key].get("type") == "number" \
            else TraitValue.value_text
        value = (select(column).where(TraitValue.project_id == project_id,
                                      TraitValue.customer_id == Customer.id,
                                      TraitValue.key == key)
                 .correlate(Customer).scalar_subquery())
        return [value.desc().nulls_last(), Customer.id.desc()]
    return [Customer.id.desc()]


@bp.route("/projects/<int:project_id>/customers/<int:customer_id>")
@project_required
def customer(project_id: int, customer_id: int):
    customer = get_or_404(Customer, customer_id, project_id)
    traits = get_traits(project_id, [customer.id])[customer.id]
    events = list(db.session.scalars(
        select(Event).where(Event.project_id == project_id, Event.customer_id == customer.id)
        .order_by(Event.occurred_at.desc(), Event.id.desc()).limit(100)))
    panels = [p for p in get_pm().hook.crowdpower_customer_panels(
        project_id=project_id, customer_id=customer.id) if p]
    specs = trait_specs(project_id)
    groups: dict[str, list[str]] = {}
    for key in sorted(traits, key=lambda k: (specs.get(k, {}).get("name") or k).lower()):
        groups.setdefault(specs.get(key, {}).get("group") or "Traits", []).append(key)
    attached = {p["group"]: p["html"] for p in panels if isinstance(p, dict) and p.get("group")}
    loose = [p["html"] if isinstance(p, dict) else p for p in panels
             if not (isinstance(p, dict) and p.get("group"))]
    for name in attached:
        groups.setdefault(name, [])
    feed = event_lines(project_id, events)
    return render_template("customer.html", customer=customer, traits=traits, events=feed,
                           panels=loose, groups=groups, attached=attached, specs=specs,
                           identity=_identity(project_id))


def event_lines(project_id: int, events: list[Event]) -> list[dict]:
    """The feed: each event as a sentence (its definition's ``sentence``, else its name)
    and its properties formatted, empty ones left out."""
    specs = event_specs(project_id)
    lines = []
    for event in events:
        spec = specs.get(event.name, {})
        props = event.properties or {}
        formats = spec.get("formats") or {}
        sentence = render_sentence(spec["sentence"], props) if spec.get("sentence") else None
        shown = [(k, display.html(format_property(k, props, formats))) for k in sorted(props)
                 if props[k] not in (None, "", [], {})]
        lines.append({"event": event, "sentence": sentence, "properties": shown})
    return lines


def _identity(project_id: int):
    """``traits -> label``: the first identifying trait plugins name (an external id), for
    customers with neither name nor email."""
    keys = [k for batch in get_pm().hook.crowdpower_customer_identity_traits(
        project_id=project_id) for k in batch or []]
    return lambda traits: next((traits[k] for k in keys if traits.get(k)), None)


@bp.route("/projects/<int:project_id>/segments")
@project_required
def segment_list(project_id: int):
    rows = segment_service.with_counts(project_id)
    return render_template("segments.html", segments=rows, form={}, error=None)


@bp.post("/projects/<int:project_id>/segments")
@project_required
def create_segment(project_id: int):
    """Add a custom segment from the form; a bad rule re-shows the form with the reason."""
    form = request.form
    try:
        try:
            rules = json.loads(form.get("rules") or "")
        except ValueError:
            raise RuleError("the rules are not valid JSON") from None
        segment = segment_service.create(project_id, form.get("name"), rules,
                                         form.get("description") or "")
    except (RuleError, segment_service.DuplicateSegment) as exc:
        db.session.rollback()
        rows = segment_service.with_counts(project_id)
        return render_template("segments.html", segments=rows, form=form,
                               error=str(exc)), 400
    db.session.commit()
    flash(f"Segment “{segment.name}” created.")
    return redirect(url_for("web.segment_list", project_id=project_id))


@bp.post("/projects/<int:project_id>/customers/<int:customer_id>/unsubscribe")
@project_required
def unsubscribe_customer(project_id: int, customer_id: int):
    customer = get_or_404(Customer, customer_id, project_id)

    customer.unsubscribed_at = None if customer.unsubscribed_at else utcnow()
    db.session.commit()
    flash("Subscription preference saved.")
    return redirect(url_for("web.customer", project_id=project_id, customer_id=customer_id))
