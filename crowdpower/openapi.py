"""The OpenAPI 3 document of the REST API, served at ``GET /api/v1/openapi.json``.

Paths come from the URL map (every ``/api/v1`` route, plugins' included, so a new route
is never missing), with the request bodies and query parameters of the host's routes
described here; the fuzz suite (tests/adversarial) generates its requests from it.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Flask, current_app, jsonify

TEXT = {"type": "string"}
ID = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
RULE = {"type": "object", "description": 'a rule: {"all"|"any": [...]} or a condition '
        '{"trait", "op", "value"}', "additionalProperties": True}
TRAITS = {"type": "object", "additionalProperties": {
    "oneOf": [TEXT, {"type": "number"}, {"type": "boolean"}, {"type": "array"},
              {"type": "null"}]}}
AUTOMATION = {"type": "object", "additionalProperties": False, "properties": {
    "name": TEXT, "trigger": TEXT, "conditions": {"type": "object", "properties": {
        "event": RULE, "traits": RULE}}, "segment_id": {**ID, "nullable": True},
    "delay_seconds": {"type": "integer", "minimum": 0, "maximum": 90 * 24 * 3600},
    "action": {"type": "string", "enum": ["email", "webhook"]}, "subject": TEXT,
    "html": TEXT, "text": TEXT, "webhook_url": {"type": "string", "format": "uri"},
    "webhook_body": TEXT, "enabled": {"type": "boolean"},
    "conversion_event": {"type": "string", "maxLength": 200, "nullable": True},
    "attribution_window_hours": {"type": "integer", "minimum": 1, "maximum": 90 * 24}}}
BODIES: dict[str, dict] = {
    "api.create_customer": {"type": "object", "required": ["email"], "properties": {
        "email": {"type": "string", "format": "email", "maxLength": 320},
        "name": {"type": "string", "maxLength": 300}, "traits": TRAITS}},
    "api.track_event": {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string", "maxLength": 200}, "properties": {"type": "object"},
        "occurred_at": {"type": "string", "format": "date-time"},
        "external_id": {"type": "string", "maxLength": 255}}},
    "api.create_segment": {"type": "object", "required": ["name", "rules"], "properties": {
        "name": {"type": "string", "maxLength": 200}, "rules": RULE,
        "description": TEXT}},
    "automations.api_create_automation": {
        **AUTOMATION, "required": ["name", "trigger"],
        "properties": {**AUTOMATION["properties"],
                       "template_key": {"type": "string", "minLength": 1, "maxLength": 100}}},
    "automations.api_update_automation": AUTOMATION,
    "automations.api_update_settings": {"type": "object", "properties": {
        "frequency_cap_hours": {"type": "integer", "minimum": 1, "maximum": 720,
                                "nullable": True}}},
}
PAGE = [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                     "maximum": 100}},
        {"name": "starting_after", "in": "query", "schema": ID}]
QUERIES: dict[str, list[dict]] = {
    "api.list_customers": [*PAGE, {"name": "email", "in": "query", "schema": TEXT},
                           {"name": "segment", "in": "query", "schema": ID}],
    "api.customer_events": PAGE,
    "automations.api_list_automations": [*PAGE, {"name": "trigger", "in": "query",
                                                 "schema": TEXT}],
    "revenue.api_revenue": [
        {"name": "month", "in": "query", "schema": {"type": "string", "pattern":
                                                    r"^\d{4}-\d{2}$"}},
        {"name": "start", "in": "query", "schema": {"type": "string", "format": "date"}},
        {"name": "end", "in": "query", "schema": {"type": "string", "format": "date"}}],
    "automations.api_list_messages": [
        *PAGE, {"name": "customer_id", "in": "query", "schema": ID},
        {"name": "automation_id", "in": "query", "schema": ID},
        {"name": "state", "in": "query", "schema": {"type": "string", "enum": [
            "queued", "sending", "sent", "failed", "skipped", "outbox"]}}],
}
ERROR = {"type": "object", "properties": {"error": {"type": "object", "properties": {
    "code": TEXT, "message": TEXT}}}}


def _operation(endpoint: str, method: str, path_params: list[str]) -> dict[str, Any]:
    view = current_app.view_functions.get(endpoint)
    doc = (getattr(view, "__doc__", None) or endpoint).strip().splitlines()[0]
    op: dict[str, Any] = {
        "operationId": endpoint.replace(".", "_") + ("" if method == "get" else f"_{method}"),
        "summary": doc,
        "parameters": [{"name": p, "in": "path", "required": True, "schema": ID}
                       for p in path_params] + QUERIES.get(endpoint, []),
        "responses": {"200": {"description": "OK"},
                      "4XX": {"description": "A client error",
                              "content": {"application/json": {"schema": ERROR}}}},
    }
    if endpoint in BODIES and method in ("post", "patch", "put"):
        op["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": BODIES[endpoint]}}}
    if endpoint != "openapi.document":
        op["security"] = [{"bearer": []}]
    return op


def document() -> dict[str, Any]:
    paths: dict[str, dict] = {}
    for rule in sorted(current_app.url_map.iter_rules(), key=lambda r: r.rule):
        if not rule.rule.startswith("/api/v1/"):
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(
                rule.endpoint, method.lower(), list(rule.arguments))
    return {
        "openapi": "3.0.3",
        "info": {"title": "CrowdPower API", "version": "1"},
        "servers": [{"url": "/"}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "a project API key"}}},
        "paths": paths,
    }


def init_app(app: Flask) -> None:
    def openapi_document():
        """This document."""
        return jsonify(document())

    app.add_url_rule("/api/v1/openapi.json", "openapi.document", openapi_document)
