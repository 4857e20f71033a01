"""The Stripe plugin's hook implementations (entry point ``crowdpower.plugins: stripe``).

Everything the plugin adds to the host goes through these hooks: its config keys
(``STRIPE_*``), blueprint (``stripe``), definitions and segments seeded
per project, queues, periodic jobs and migration branch. (``crowdpower demo`` and
``crowdpower stripe-double`` come with the Stripe double, a distribution of its own.)
"""

from __future__ import annotations

import logging
from pathlib import Path

from crowdpower.plugins import hookimpl
from crowdpower.plugins.stripe import api, lifecycle, webhooks
from crowdpower.plugins.stripe.automation_templates import STRIPE_TEMPLATES
from crowdpower.plugins.stripe.blueprint import bp, load_routes
from crowdpower.plugins.stripe.lifecycle import PAYMENT_RECOVERED
from crowdpower.plugins.stripe.lifecycle_templates import LIFECYCLE_TEMPLATES
from crowdpower.plugins.stripe.mapping import EVENT_DEFINITIONS, TRAIT_DEFINITIONS
from crowdpower.plugins.stripe.metrics import INSTRUMENTS, inbox_gauges
from crowdpower.plugins.stripe.ops import COMMANDS as OPS_COMMANDS
from crowdpower.plugins.stripe.ops import status as ops_status
from crowdpower.plugins.stripe.queues import QUEUES
from crowdpower.plugins.stripe.status import integration_status
from crowdpower.services import csrf_exempt, is_enabled, setting

NAME = "stripe"

SEGMENTS = [
    {"name": "Active Stripe Subscribers", "source": NAME,
     "description": "Customers whose primary Stripe subscription is active.",
     "rules": {"all": [{"trait": "stripe_subscription_status", "op": "eq", "value": "active"}]}},
    {"name": "New Stripe Customers", "source": NAME,
     "description": "Customers created in Stripe in the past 30 days.",
     "rules": {"all": [{"trait": "stripe_created_at", "op": "within_last",
                        "value": {"days": 30}}]}},
]

CONFIG_DEFAULTS = {
    # Names in CONTRACT.md: our platform keys and Stripe's URLs.
    "STRIPE_CLIENT_ID": None,
    "STRIPE_SECRET_KEY": None,
    "STRIPE_WEBHOOK_SECRET": None,
    "STRIPE_API_BASE": "https://api.stripe.com",
    "STRIPE_CONNECT_BASE": "https://connect.stripe.com",
    "STRIPE_MAX_NETWORK_RETRIES": 2,
    "STRIPE_WEBHOOK_TOLERANCE": 300,
    "STRIPE_OAUTH_STATE_TTL": 600,
    # The initial sync: page size, objects per write, customers per traits batch, runs per
    # tenant at once, retries of a failing page (backoff base/max seconds), lease and time
    # slice of a job, delay of a run over the tenant's limit, and when a silent run counts
    # as dead.
    "STRIPE_SYNC_PAGE_SIZE": 100,
    "STRIPE_SYNC_FLUSH_OBJECTS": 1000,
    "STRIPE_SYNC_TRAITS_BATCH": 1000,
    "STRIPE_SYNC_MAX_ATTEMPTS": 8,
    "STRIPE_SYNC_BACKOFF_BASE": 0.5,
    "STRIPE_SYNC_BACKOFF_MAX": 30.0,
    "STRIPE_SYNC_LEASE_SECONDS": 60,
    "STRIPE_SYNC_SLICE_SECONDS": 240,
    "STRIPE_SYNC_DEFER_SECONDS": 5,
    "STRIPE_SYNC_STALE_SECONDS": 600,
    # Stripe allows 100 reads/s in live mode and 25 in test mode; stay under both.
    "STRIPE_LIVE_REQUESTS_PER_SECOND": 80,
    "STRIPE_TEST_REQUESTS_PER_SECOND": 20,
    "STRIPE_SYNC_MAX_PER_TENANT": 1,
    "STRIPE_DEDUPE_WINDOW_SECONDS": 120,
    # The inbox sweeper runs this often and looks at rows older than the second value.
    "STRIPE_SWEEP_INTERVAL": 30,
    "STRIPE_SWEEP_AFTER_SECONDS": 60,
    # A drain job works this long, then queues behind other tenants for more.
    "STRIPE_WEBHOOK_DRAIN_SECONDS": 2.0,
    # Inbox rows a drain claims and applies together (one transaction, set-based writes).
    "STRIPE_WEBHOOK_BATCH": 250,
    # Threads per worker process that read objects from Stripe while the drain goes on
    # with other customers (``prefetch``); 0 reads in line. Needs Redis and PostgreSQL.
    "STRIPE_WEBHOOK_READ_THREADS": 4,
    # The platform's test-mode key: reads test-mode objects of live accounts (opt-in test
    # data); unset, such look-ups are skipped and the event's note says so. It also
    # exchanges and refreshes the Stripe App's test-mode tokens.
    "STRIPE_TEST_SECRET_KEY": None,
    # Stripe App access tokens live one hour (Stripe sends no expiry); refresh early.
    "STRIPE_APP_TOKEN_LIFETIME": 3600,
    "STRIPE_APP_REFRESH_MARGIN": 300,
}
# Text settings (None: unset). STRIPE_CONNECT_MODE: "app" (Stripe App, the default) or
# "connect" (legacy Connect OAuth, for existing links).
CONFIG_DEFAULTS.update({
    "STRIPE_CONNECT_MODE": "app",
    "STRIPE_APP_AUTHORIZE_URL": None,
    "STRIPE_APP_TEST_AUTHORIZE_URL": None,
    "STRIPE_TEST_WEBHOOK_SECRET": None,
    "STRIPE_APP_DASHBOARD_URL": "https://dashboard.stripe.com/settings/apps",
})


@hookimpl
def crowdpower_config_defaults():
    """Every key settable by the environment variable of its name (the host reads it)."""
    return CONFIG_DEFAULTS


@hookimpl
def crowdpower_plugin_info():
    return {"name": NAME, "title": "Stripe",
            "description": "Sync Stripe customers with their subscriptions and charges, "
                           "and message them when billing events happen.",
            "card_template": "stripe/card.html",
            "status": integration_status}


@hookimpl
def crowdpower_register_blueprints(app):
    debug = str(app.config.get("LOG_LEVEL") or "INFO").upper() == "DEBUG"
    # the SDK logs every request at INFO: only when debugging
    logging.getLogger("stripe").setLevel(logging.NOTSET if debug else logging.WARNING)
    load_routes()
    app.register_blueprint(bp)
    csrf_exempt(webhooks.receive)
    for view in api.VIEWS:
        csrf_exempt(view)


@hookimpl
def crowdpower_trait_definitions(project_id):
    return [{**d, "source": NAME} for d in TRAIT_DEFINITIONS]


@hookimpl
def crowdpower_event_definitions(project_id):
    return [{**d, "source": NAME} for d in EVENT_DEFINITIONS + lifecycle.EVENT_DEFINITIONS]


@hookimpl
def crowdpower_segment_seeds(project_id):
    return SEGMENTS


@hookimpl
def crowdpower_automation_templates(project_id):
    """Suggested automations (dunning, trial ending, renewal, win-back) once Stripe is on."""
    return STRIPE_TEMPLATES + LIFECYCLE_TEMPLATES if is_enabled(project_id, NAME) else []


@hookimpl
def crowdpower_revenue_sources(project_id):
    """The revenue snapshot reads MRR from ``stripe_mrr`` (Stripe's definition, see
    ``mapping.subscription_mrr``) in ``stripe_currency``."""
    if not is_enabled(project_id, NAME):
        return []
    return [{"mrr_trait": "stripe_mrr", "currency_trait": "stripe_currency"}]


@hookimpl
def crowdpower_conversion_events(project_id):
    """A recovered payment is what a dunning message is for (constant: only projects
    with Stripe ever record the event)."""
    return [{"name": PAYMENT_RECOVERED, "amount_property": "amount",
             "currency_property": "currency"}]


@hookimpl
def crowdpower_customer_panels(project_id, customer_id):
    """Subscriptions and recent charges, attached to the profile's "Stripe" group."""
    from crowdpower.plugins.stripe.profile import customer_panel

    return customer_panel(project_id, customer_id)


@hookimpl
def crowdpower_queues():
    # Acknowledged events first (small, latency-sensitive); long syncs last.
    return [(QUEUES["webhooks"], 10), (QUEUES["sync"], 90)]


@hookimpl
def crowdpower_periodic_jobs():
    return [("crowdpower.plugins.stripe.inbox.sweep_inbox",
             int(setting("STRIPE_SWEEP_INTERVAL")), QUEUES["webhooks"]),
            ("crowdpower.plugins.stripe.sync_sweeper.sweep_syncs", 60, QUEUES["sync"])]


@hookimpl
def crowdpower_customer_columns(project_id):
    return [{"trait": "stripe_plan_name", "label": "Plan", "pill": False},
            {"trait": "stripe_subscription_status", "label": "Status", "pill": True},
            {"trait": "stripe_mrr", "label": "MRR", "pill": False},
            {"trait": "stripe_total_spent", "label": "Lifetime spend", "pill": False}]


@hookimpl
def crowdpower_customer_identity_traits(project_id):
    return ["stripe_customer_id"]


@hookimpl
def crowdpower_sample_traits():
    return {"stripe_plan_name": "Pro", "stripe_plan_amount": 49.0, "stripe_currency": "usd",
            "stripe_subscription_status": "active", "stripe_mrr": 49.0,
            "stripe_trial_end_at": "2030-01-31T00:00:00Z",
            "stripe_current_period_end_at": "2030-02-01T00:00:00Z"}


@hookimpl
def crowdpower_migration_dirs():
    return [Path(__file__).resolve().parent / "migrations" / "versions"]



@hookimpl
def crowdpower_metrics():
    """Webhook acks, applied events, syncs and API calls; inbox and sync gauges."""
    return [*INSTRUMENTS, inbox_gauges]


@hookimpl
def crowdpower_ops_commands():
    """``crowdpower ops events list|retry`` and ``ops sync resume|cancel``."""
    return OPS_COMMANDS


@hookimpl
def crowdpower_ops_status(project_id):
    """Inbox backlog per project, running and failed syncs."""
    return ops_status(project_id)
