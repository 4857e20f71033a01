"""The Revenue page and ``GET /api/v1/revenue`` (same figures, same code)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from flask import g, jsonify, render_template, request

from crowdpower.api import ApiError
from crowdpower.auth import api_error, api_key_required, project_required
from crowdpower.revenue import bp
from crowdpower.revenue.chart import line_chart
from crowdpower.revenue.report import month_bounds, report

MAX_DAYS = 3 * 366


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError):
    return api_error(exc.status, exc.code, exc.message)


def _today() -> date:
    return datetime.now(UTC).date()


def period_from(args) -> tuple[date, date]:
    """``?month=YYYY-MM`` or ``?start=YYYY-MM-DD&end=YYYY-MM-DD`` (default: this month)."""
    start, end = args.get("start"), args.get("end")
    if start or end:
        try:
            first = date.fromisoformat(start) if start else _today().replace(day=1)
            last = date.fromisoformat(end) if end else _today()
        except ValueError:
            raise ApiError(400, "invalid_date", "start and end must be dates (YYYY-MM-DD)."
                           ) from None
        if last < first:
            raise ApiError(400, "invalid_period", "end must not be before start.")
        if last - first > timedelta(days=MAX_DAYS):
            raise ApiError(400, "invalid_period", "a period is at most three years.")
        return first, last
    try:
        return month_bounds(args.get("month"), _today())
    except ValueError:
        raise ApiError(400, "invalid_month", "month must be YYYY-MM.") from None


@bp.get("/api/v1/revenue")
@api_key_required
def api_revenue():
    first, last = period_from(request.args)
    return jsonify(report(g.project.id, first, last))


@bp.get("/projects/<int:project_id>/revenue")
@project_required
def page(project_id: int):
    try:
        first, last = period_from(request.args)
    except ApiError as exc:
        return render_template("error.html", code=400, message=exc.message), 400
    figures = report(project_id, first, last)
    # The chart shows the ~6 months up to the period's end, so there is history to see.
    history = report(project_id, last - timedelta(days=183), last)
    charts = {c["currency"]: line_chart(c["series"], c["currency"])
              for c in history["currencies"]}
    prev_month = (first - timedelta(days=1)).strftime("%Y-%m")
    next_month = (last + timedelta(days=1)).strftime("%Y-%m")
    return render_template("revenue/index.html", figures=figures, charts=charts,
                           month=first.strftime("%B %Y"), prev_month=prev_month,
                           next_month=next_month if last < _today() else None)
