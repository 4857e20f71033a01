"""The host's public services: everything a plugin may use of the host, in one place.

A plugin reaches host data only through these names and the hooks in
``crowdpower.hookspecs``; it never imports host models or names host tables or
columns (``tests/host/test_seams.py`` enforces both). What is here:

- customers: ``match_or_create`` (bulk, by the plugin's external key and email; the
  fast COPY path), ``ExternalCustomer``, ``upsert_customer``, ``normalise_email``;
- traits: ``set_traits``, ``bulk_set_traits`` (``None`` deletes), ``get_traits``;
- events: ``record_event`` (idempotent on ``external_id``; automations see it after
  commit), ``record_events`` (the same for a batch of ``NewEvent``, a few statements);
- jobs: ``enqueue``, ``enqueue_once``, ``after_commit`` (queues are declared by the plugin,
  namespaced ``<plugin>.<purpose>``), ``RetryPolicy`` (one retry helper: attempts,
  schedule or backoff with jitter, what is retryable);
- settings: ``setting`` (plugins declare keys and defaults with
  ``crowdpower_config_defaults``; every key is settable from the environment);
- integrations: ``is_enabled``, ``enable``, ``disable``;
- tenancy and storage for the plugin's own tables: ``db``, ``TenantMixin``,
  ``UTCDateTime``, ``JSONType``, ``EncryptedText``, ``utcnow``, ``iso`` (the ISO 8601 formatter), ``project_scope``,
  ``unscoped``, ``current_project_id``, ``get_by_id_and_project``, ``bulk_upsert``,
  ``among``, ``copies``/``copy_or`` (COPY a large batch, with a fallback on conflict);
- operating: ``metric_counter``/``metric_histogram`` (declare metrics, listed by the
  ``crowdpower_metrics`` hook), ``log_context`` (fields on every log record inside a
  ``with``), ``ops_audit``/``ops_echo``/``ops_project_option``/``ops_require_project``/
  ``ops_require_found``
  (for ``crowdpower ops`` commands from ``crowdpower_ops_commands``);
- web: ``login_required``, ``project_required``, ``api_key_required``, ``api_error``,
  ``csrf_exempt``.
"""

from __future__ import annotations

from crowdpower.auth import api_error, api_key_required, login_required, project_required
from crowdpower.bulk import among, copies, copy_or
from crowdpower.bulk import upsert as bulk_upsert
from crowdpower.crypto import EncryptedText
from crowdpower.customers import (
    NewEvent,
    bulk_set_traits,
    get_traits,
    record_event,
    record_events,
    set_traits,
    upsert_customer,
)
from crowdpower.extensions import csrf, db
from crowdpower.integrations import disable, enable, is_enabled
from crowdpower.isotime import iso
from crowdpower.jobs import after_commit, enqueue, enqueue_once
from crowdpower.logs import bind as log_context
from crowdpower.metrics import counter as metric_counter
from crowdpower.metrics import histogram as metric_histogram
from crowdpower.models import JSONType, UTCDateTime, utcnow
from crowdpower.ops import audit as ops_audit
from crowdpower.ops import echo as ops_echo
from crowdpower.ops import project_option as ops_project_option
from crowdpower.ops import require_found as ops_require_found
from crowdpower.ops import require_project as ops_require_project
from crowdpower.retry import RetryPolicy
from crowdpower.services.customers import ExternalCustomer, match_or_create, normalise_email
from crowdpower.services.settings import setting
from crowdpower.tenancy import (
    TenantMixin,
    current_project_id,
    get_by_id_and_project,
    project_scope,
    unscoped,
)


def csrf_exempt(view):
    """Exempt a view from CSRF (signed webhooks, bearer-token APIs)."""
    return csrf.exempt(view)


__all__ = [
    "EncryptedText", "ExternalCustomer", "JSONType", "RetryPolicy", "TenantMixin", "UTCDateTime",
    "after_commit", "among", "copies", "copy_or", "api_error", "api_key_required", "bulk_set_traits",
    "bulk_upsert", "csrf_exempt", "current_project_id", "db", "disable", "enable", "enqueue",
    "enqueue_once", "get_by_id_and_project", "get_traits", "is_enabled", "iso", "login_required",
    "match_or_create", "NewEvent", "normalise_email", "project_required", "project_scope",
    "record_event", "record_events",
    "set_traits", "setting", "unscoped", "upsert_customer", "utcnow",
    "log_context", "metric_counter", "metric_histogram", "ops_audit", "ops_echo",
    "ops_project_option", "ops_require_found", "ops_require_project",
]
