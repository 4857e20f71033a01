"""Optional error reporting to Sentry: only when ``SENTRY_DSN`` is set.

``sentry-sdk`` is imported only then (``pip install 'crowdpower[sentry]'``). Events carry
the project id and the request or job id as tags; request bodies, cookies, headers, query
strings, user details, local variables of stack frames (a view's locals hold the parsed
body) and a job's arguments (RQ's description repeats them) are never sent, and every
string left goes through the log redaction filter.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask

log = logging.getLogger(__name__)
_enabled = False  # sentry_sdk.init is per process, like this flag


def scrub(event: dict[str, Any], _hint: Any = None) -> dict[str, Any]:
    """``before_send``: tag the tenant and request, drop bodies and headers, redact."""
    from crowdpower.logs import REDACTION, request_id
    from crowdpower.tenancy import current_project_id

    tags = dict(event.get("tags") or {})
    project_id = current_project_id()
    if project_id is not None:
        tags["project_id"] = str(project_id)
    if request_id():
        tags["request_id"] = request_id()
    event["tags"] = tags
    req = event.get("request")
    if isinstance(req, dict):
        event["request"] = {k: req[k] for k in ("method", "url") if k in req}
    event.pop("user", None)
    rq_job = (event.get("extra") or {}).get("rq-job")
    if isinstance(rq_job, dict):
        event["extra"]["rq-job"] = {k: rq_job[k] for k in ("job_id", "func") if k in rq_job}
    return _redact(event, REDACTION.redact)


def tag_job(project_id: int | None, job_id: str | None) -> None:
    """Tag what Sentry reports for the job starting now with its project and job id (RQ's
    integration reports a failure after the job's tenant scope has ended)."""
    if not _enabled:
        return
    import sentry_sdk

    scope = sentry_sdk.get_current_scope()
    for key, value in (("project_id", project_id), ("job_id", job_id)):
        if value is None:
            scope.remove_tag(key)
        else:
            scope.set_tag(key, str(value))


def _redact(value: Any, redact) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact(v, redact) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, redact) for v in value]
    return value


def init_app(app: Flask) -> None:
    global _enabled
    dsn = app.config.get("SENTRY_DSN")
    if not dsn or app.extensions.get("crowdpower.sentry"):
        return
    try:
        import sentry_sdk
        from sentry_sdk.integrations.flask import FlaskIntegration
        from sentry_sdk.integrations.rq import RqIntegration
    except ImportError:
        log.error("SENTRY_DSN is set but sentry-sdk is not installed: "
                  "pip install 'crowdpower[sentry]'")
        return
    sentry_sdk.init(dsn=dsn, integrations=[FlaskIntegration(), RqIntegration()],
                    send_default_pii=False, max_request_body_size="never",
                    include_local_variables=False, before_send=scrub, traces_sample_rate=0)
    app.extensions["crowdpower.sentry"] = True
    _enabled = True
