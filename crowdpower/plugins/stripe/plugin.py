"""The Stripe plugin's hook implementations (entry point ``crowdpower.plugins: stripe``).

Everything the plugin adds to the host goes through these hooks: its config keys
(``STRIPE_*``), blueprint (``stripe``), OAuth client, definitions and segments seeded
per project, queues, periodic jobs, CLI commands and migration branch.
"""

from __future__ import annotations

import os
from pathlib import Path

from crowdpower.plugins import hookimpl

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
    "STRIPE_MAX_NETWORK_RETRIES": 2,
    "STRIPE_WEBHOOK_TOLERANCE": 300,
    "STRIPE_OAUTH_STATE_TTL": 600,
    "STRIPE_SYNC_PAGE_SIZE": 100,
    # Stripe allows 100 reads/s in live mode and 25 in test mode; stay under both.
    "STRIPE_LIVE_REQUESTS_PER_SECOND": 80,
    "STRIPE_TEST_REQUESTS_PER_SECOND": 20,
    "STRIPE_SYNC_MAX_PER_TENANT": 1,
    "STRIPE_DEDUPE_WINDOW_SECONDS": 120,
    "STRIPE_SWEEP_INTERVAL": 30,
    "STRIPE_SWEEP_AFTER_SECONDS": 60,
    # A drain job works this long, then queues behind other tenants for more.
    "STRIPE_WEBHOOK_DRAIN_SECONDS": 2.0,
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
TEXT_SETTINGS = {
    "STRIPE_CONNECT_MODE": "app",
    "STRIPE_APP_AUTHORIZE_URL": None,
    "STRIPE_APP_TEST_AUTHORIZE_URL": None,
    "STRIPE_TEST_WEBHOOK_SECRET": None,
    "STRIPE_APP_DASHBOARD_URL": "https://dashboard.stripe.com/settings/apps",
}


@hookimpl
def crowdpower_load_config(config):
    """Defaults for the plugin's keys; each may be set by an environment variable too."""
    for key, value in CONFIG_DEFAULTS.items():
        raw = os.environ.get(key)
        if key not in config and raw not in (None, ""):
            config[key] = raw if value is None else type(value)(raw)
        config.setdefault(key, value)
    for key, default in TEXT_SETTINGS.items():
        if config.get(key) in (None, ""):
            config[key] = os.environ.get(key) or default


@hookimpl
def crowdpower_plugin_info():
    from crowdpower.plugins.stripe.status import integration_status

    return {"name": NAME, "title": "Stripe",
            "description": "Sync Stripe customers with their subscriptions and charges, "
                           "and message them when billing events happen.",
            "card_template": "stripe/card.html",
            "status": integration_status}


@hookimpl
def crowdpower_register_blueprints(app):
    from crowdpower.extensions import csrf
    from crowdpower.plugins.stripe.blueprint import bp, load_routes

    load_routes()
    app.register_blueprint(bp)
    from crowdpower.plugins.stripe import api, webhooks

    csrf.exempt(webhooks.receive)
    for view in api.VIEWS:
        csrf.exempt(view)


@hookimpl
def crowdpower_register_oauth_clients(oauth, app):
    from crowdpower.plugins.stripe.connect import register_oauth_client

    register_oauth_client(oauth, app)


@hookimpl
def crowdpower_trait_definitions(project_id):
    from crowdpower.plugins.stripe.mapping import TRAIT_DEFINITIONS

    return [{**d, "source": NAME} for d in TRAIT_DEFINITIONS]


@hookimpl
def crowdpower_event_definitions(project_id):
    from crowdpower.plugins.stripe.mapping import EVENT_DEFINITIONS

    return [{**d, "source": NAME} for d in EVENT_DEFINITIONS]


@hookimpl
def crowdpower_segment_seeds(project_id):
    return SEGMENTS


@hookimpl
def crowdpower_automation_templates(project_id):
    """Suggested automations (dunning, trial ending, renewal, win-back) once Stripe is on."""
    from crowdpower.integrations import is_enabled
    from crowdpower.plugins.stripe.automation_templates import STRIPE_TEMPLATES

    return STRIPE_TEMPLATES if is_enabled(project_id, NAME) else []


@hookimpl
def crowdpower_customer_panels(project_id, customer_id):
    """Subscriptions and recent charges, attached to the profile's "Stripe" group."""
    from crowdpower.plugins.stripe.profile import customer_panel

    return customer_panel(project_id, customer_id)


@hookimpl
def crowdpower_queues():
    return ["webhooks", "sync"]


@hookimpl
def crowdpower_periodic_jobs():
    return [("crowdpower.plugins.stripe.webhooks.sweep_inbox", 30, "webhooks"),
            ("crowdpower.plugins.stripe.sync_sweeper.sweep_syncs", 60, "sync")]


@hookimpl
def crowdpower_migration_dirs():
    return [Path(__file__).resolve().parent / "migrations" / "versions"]


@hookimpl
def crowdpower_cli_commands():
    from crowdpower.plugins.stripe.commands import COMMANDS

    return COMMANDS
