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

    Return a dict: ``name`` (the plugin's namespace, e.g. ``"billing"``), ``title``,
    ``description``, ``card_template`` (Jinja template rendering the card; gets
    ``project`` and ``plugin``), ``status`` (callable ``(project_id) -> dict``).
    """


@hookspec
def crowdpower_config_defaults():
    """Return ``{KEY: default}`` for the plugin's own config keys (``MYPLUGIN_*``).

    The host fills each key from the environment variable of that name (converted to the
    default's type: int, float, bool, list of comma-separated values; ``None``: text),
    else the default, unless ``create_app`` was given the key
    (``crowdpower.services.settings``). One mechanism: every key is settable.
    """


@hookspec
def crowdpower_load_config(config):
    """Adjust ``config`` after every plugin's defaults were applied (derived values)."""


@hookspec
def crowdpower_register_blueprints(app):
    """Register the plugin's blueprints on ``app`` (name = plugin namespace)."""


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
def crowdpower_events_recording(project_id, event_ids):
    """Called with a batch of events (``record_events``, e.g. a webhook inbox drain) in the
    transaction recording them, before it commits: writes made here commit or roll back
    with the events (so a crash cannot lose what they promise); work that must see the
    events committed goes through ``after_commit``. A plugin implementing it gets batches
    here instead of one ``crowdpower_event_recorded`` call per event of the batch; it
    should implement both (``record_event`` announces single events after commit)."""


@hookspec
def crowdpower_cli_commands():
    """Return click commands to add to the ``crowdpower`` CLI."""


@hookspec
def crowdpower_queues():
    """Return the queues the plugin's jobs use: names namespaced ``<plugin>.<purpose>``
    (``"billing.sync"``), each a name or ``(name, priority)``; a worker serves queues by
    priority, lowest first (the host's ``automations.dispatch`` is 5, ``messages`` 20,
    ``default`` 50; a bare name gets 60)."""


@hookspec
def crowdpower_dev_commands():
    """Return names of the plugin's CLI commands that run in development mode (no external
    services, no production keys: a demo, a test double)."""


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
def crowdpower_customer_columns(project_id):
    """Return trait columns for the customer list: dicts ``trait`` (key), ``label``, and
    ``pill`` (bool: shown as a badge)."""


@hookspec
def crowdpower_customer_identity_traits(project_id):
    """Return trait keys that name a customer without name or email (an external id)."""


@hookspec
def crowdpower_sample_traits():
    """Return ``{trait key: example value}``: the sample customer automation templates are
    checked against when saved."""


@hookspec
def crowdpower_automation_templates(project_id):
    """Return suggested automations for the automations page ("Use this template").

    Each a dict: ``key`` (unique), ``name``, ``description``, ``trigger`` (event name),
    ``conditions`` (``{"event": rule, "traits": rule}``, both optional), ``delay_seconds``,
    ``action`` (``"email"`` or ``"webhook"``), ``subject``, ``html``, ``text`` (Jinja
    templates; ``webhook_url``/``webhook_body`` for webhooks).
    """


@hookspec
def crowdpower_metrics():
    """Return the plugin's metrics (``/metrics``, README "Operating CrowdPower").

    Items are instruments made with ``crowdpower.metrics.counter`` / ``histogram`` at
    import of the plugin's metrics module (names ``crowdpower_<plugin>_…``; labels must
    stay bounded, customer- or account-like labels are refused when declared), and
    collectors: callables run in app context when ``/metrics`` is scraped, returning
    ``prometheus_client`` metric families measured then (backlogs, ages, states of work
    tables; keep them to a few indexed queries: operators poll every 15 s).
    """


@hookspec
def crowdpower_revenue_sources(project_id):
    """Return where a project's customers' MRR lives, for the daily revenue snapshot.

    Each a dict: ``mrr_trait`` (a number trait: MRR in major units) and
    ``currency_trait`` (the ISO code of that MRR). Return ``[]`` for projects the
    plugin is not enabled for. Several sources add up per customer and currency.
    """


@hookspec
def crowdpower_ops_commands():
    """Return click commands to add under ``crowdpower ops`` (operator commands).

    Each command takes ``--project`` when it touches a tenant's data and logs what it
    did (logger ``crowdpower.ops``).
    """


@hookspec
def crowdpower_ops_status(project_id):
    """Return a dict added to ``crowdpower ops status`` under the plugin's name.

    ``project_id`` is None for the installation-wide view. No secrets.
    """


@hookspec
def crowdpower_conversion_events(project_id):
    """Return the events that count as an automation's conversion unless it names its own.

    Each a dict: ``name`` (event name), ``amount_property`` and ``currency_property``
    (the event properties holding the converted amount, major units, and its currency).
    Constant data, no queries: it is asked right after an event's transaction commits.
    """
