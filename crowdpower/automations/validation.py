"""Checking an automation before it is saved: one function for the API and the UI."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from crowdpower import outbound, rules
from crowdpower.automations import attribution, templating
from crowdpower.automations.models import ACTIONS, Automation
from crowdpower.models import Segment
from crowdpower.tenancy import get_by_id_and_project

FIELDS = ("name", "trigger", "conditions", "segment_id", "delay_seconds", "action", "subject",
          "html", "text", "webhook_url", "webhook_body", "enabled",
          "conversion_event", "attribution_window_hours")
MAX_DELAY = 90 * 24 * 3600
DEFAULTS: dict[str, Any] = {"conditions": {}, "segment_id": None, "delay_seconds": 0,
                            "action": "email", "subject": "", "html": "", "text": "",
                            "webhook_url": "", "webhook_body": "", "enabled": True,
                            "conversion_event": None, "attribution_window_hours": 168}


class Invalid(ValueError):
    """Errors by field; ``code`` is the API error code of the first one."""

    def __init__(self, errors: dict[str, str], code: str) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors, self.code = errors, code


def current(automation: Automation | None) -> dict[str, Any]:
    if automation is None:
        return dict(DEFAULTS)
    return {f: getattr(automation, f) for f in FIELDS}


def _rule(value: Any, event: bool) -> dict | None:
    if value in (None, {}, ""):
        return None

    def alias(node: Any) -> Any:  # event rules may say "property" for readability
        if isinstance(node, dict):
            node = {("trait" if k == "property" and event else k): alias(v)
                    for k, v in node.items()}
        elif isinstance(node, list):
            node = [alias(v) for v in node]
        return node

    value = alias(value)
    rules.validate(value)
    return value


def clean(data: dict[str, Any], project_id: int,
          automation: Automation | None = None) -> dict[str, Any]:
    """Merge ``data`` over the automation's values (or defaults) and check the result.

    Raises ``Invalid`` with every problem found; templates are compiled and rendered
    with a sample context (a sandbox violation is an error here, not at send time).
    """
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise Invalid({unknown[0]: "unknown field"}, "unknown_field")
    values = {**current(automation), **data}
    errors: dict[str, str] = {}
    codes: list[str] = []

    def fail(field: str, message: str, code: str | None = None) -> None:
        errors.setdefault(field, message)
        codes.append(code or f"invalid_{field}")

    for field in ("name", "trigger"):
        value = values.get(field)
        if not isinstance(value, str) or not value.strip() or len(value.strip()) > 200:
            fail(field, "required, at most 200 characters")
        else:
            values[field] = value.strip()
    for field in ("subject", "html", "text", "webhook_url", "webhook_body"):
        if values.get(field) is None:
            values[field] = ""
        elif not isinstance(values[field], str):
            fail(field, "must be a string")
            values[field] = ""  # reported; the checks below see an empty string
    conditions = values.get("conditions") or {}
    if not isinstance(conditions, dict) or set(conditions) - {"event", "traits"}:
        fail("conditions", 'must be {"event": rule, "traits": rule} (both optional)')
    else:
        try:
            values["conditions"] = {k: v for k, v in (
                ("event", _rule(conditions.get("event"), event=True)),
                ("traits", _rule(conditions.get("traits"), event=False))) if v}
        except rules.RuleError as exc:
            fail("conditions", str(exc))
    segment_id = values.get("segment_id")
    if segment_id is not None:
        if isinstance(segment_id, bool) or not isinstance(segment_id, int) \
                or get_by_id_and_project(Segment, segment_id, project_id) is None:
            fail("segment_id", "no such segment in this project")
    delay = values.get("delay_seconds")
    if isinstance(delay, bool) or not isinstance(delay, int) or not 0 <= delay <= MAX_DELAY:
        fail("delay_seconds", f"an integer from 0 to {MAX_DELAY} (90 days)")
    if not isinstance(values.get("enabled"), bool):
        fail("enabled", "must be true or false")
    attribution.check(values, fail)
    action = values.get("action")
    if action not in ACTIONS:
        fail("action", f"one of {', '.join(ACTIONS)}")
    elif action == "email":
        if isinstance(values["subject"], str) and not values["subject"].strip():
            fail("subject", "an email needs a subject")
        if not (values["html"] or "").strip() and not (values["text"] or "").strip():
            fail("html", "an email needs an HTML or a text body")
    else:
        url = values["webhook_url"] if isinstance(values["webhook_url"], str) else ""
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > 2000:
            fail("webhook_url", "an http(s) URL")
        else:
            try:  # checked again, and pinned to the checked address, at send time
                outbound.check_url(url)
            except outbound.Unresolvable:
                pass  # DNS may not exist yet; the send-time check refuses it if unsafe
            except outbound.UnsafeURL as exc:
                fail("webhook_url", f"not allowed: {exc}", "unsafe_webhook_url")
        values["webhook_url"] = url.strip()
    # Templates are checked even when other fields failed (every error at once), except
    # those whose own checks already failed.
    sources = {f: values[f] for f in ("subject", "html", "text", "webhook_body")
               if f not in errors and isinstance(values.get(f), str)}
    trigger = values.get("trigger") if isinstance(values.get("trigger"), str) else ""
    for field, message in templating.validate(sources, trigger,
                                              json_fields=("webhook_body",)).items():
        fail(field, message, "invalid_template")
    if errors:
        raise Invalid(errors, codes[0])
    return {f: values[f] for f in FIELDS}


def apply(automation: Automation, values: dict[str, Any]) -> Automation:
    for field, value in values.items():
        setattr(automation, field, value)
    return automation
