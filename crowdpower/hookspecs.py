"""The hooks a CrowdPower plugin may implement.

Plugins are modules or objects found through the ``crowdpower.plugins`` entry-point
group, with functions marked ``@crowdpower.plugins.hookimpl``. Every hook is called
with keyword arguments. A hookimpl whose name matches no spec here fails at boot
(``check_pending``), so a misspelt hook is never silently ignored.

"Installed" means loaded at boot; "enabled" is a per-project row
(``ProjectPlugin``) checked at run time, switched by the plugin itself (for
example when a tenant connects an external account).
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("crowdpower")


@hookspec
def crowdpower_plugin_info():
    """Describe the plugin for the Integrations page.

    Return a dict: ``name`` (namespace, e.g. ``"stripe"``), ``title``,
    ``description``, ``card_template`` (Jinja template rendering the card; gets
    ``project`` and ``plugin``), ``status`` (callable ``(project_id) -> dict``).
    """


@hookspec
def crowdpower_load_config(config):
    """Set defaults for the plugin's own config keys (``STRIPE_*`` for Stripe)."""


@hookspec
def crowdpower_register_blueprints(app):
    """Register the plugin's blueprints on ``app`` (name = plugin namespace)."""


@hookspec
def crowdpower_register_oauth_clients(oauth, app):
    """Register OAuth clients on the authlib Flask registry ``oauth``."""


@hookspec
def crowdpower_trait_definitions(project_id):
    """Return trait definitions the plugin adds to a project when enabled.

    Each a dict: ``key``, ``name``, ``type`` (string/number/boolean/date/list),
    ``description``, ``source`` (the plugin name).
    """


@hookspec
def crowdpower_event_definitions(project_id):
    """Return event definitions (``name``, ``description``, ``properties``, ``source``)."""


@hookspec
def crowdpower_segment_seeds(project_id):
    """Return segments to create (``name``, ``description``, ``rules``, ``source``)."""


@hookspec
def crowdpower_integration_enabled(project_id, plugin):
    """Called after ``plugin`` was enabled for a project (the host seeds definitions first)."""


@hookspec
def crowdpower_integration_disabled(project_id, plugin):
    """Called after ``plugin`` was disabled for a project; customer data is kept."""


@hookspec
def crowdpower_event_recorded(project_id, event_id):
    """Called after an event was committed for a customer (automations listen here)."""


@hookspec
def crowdpower_cli_commands():
    """Return click commands to add to the ``crowdpower`` CLI."""


@hookspec
def crowdpower_queues():
    """Return queue names the plugin's jobs use, highest priority first."""


@hookspec
def crowdpower_periodic_jobs():
    """Return ``(dotted_function, every_seconds, queue)`` tuples the worker runs on a timer."""


@hookspec
def crowdpower_migration_dirs():
    """Return Alembic version directories of the plugin's own migration branch."""


@hookspec
def crowdpower_customer_panels(project_id, customer_id):
    """Return HTML snippets (markup-safe) shown on the customer profile."""


@hookspec
def crowdpower_automation_templates(project_id):
    """Return suggested automations for the automations page ("Use this template").

    Each a dict: ``key`` (unique), ``name``, ``description``, ``trigger`` (event name),
    ``conditions`` (``{"event": rule, "traits": rule}``, both optional), ``delay_seconds``,
    ``action`` (``"email"`` or ``"webhook"``), ``subject``, ``html``, ``text`` (Jinja
    templates; ``webhook_url``/``webhook_body`` for webhooks).
    """


@hookspec
def crowdpower_revenue_sources(project_id):
    """Return where a project's customers' MRR lives, for the daily revenue snapshot.

    Each a dict: ``mrr_trait`` (a number trait: MRR in major units) and
    ``currency_trait`` (the ISO code of that MRR). Return ``[]`` for projects the
    plugin is not enabled for. Several sources add up per customer and currency.
    """


@hookspec
def crowdpower_conversion_events(project_id):
    """Return the events that count as an automation's conversion unless it names its own.

    Each a dict: ``name`` (event name), ``amount_property`` and ``currency_property``
    (the event properties holding the converted amount, major units, and its currency).
    Constant data, no queries: it is asked right after an event's transaction commits.
    """
