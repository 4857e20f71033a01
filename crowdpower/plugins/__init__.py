"""Plugin manager: pluggy, discovered through the ``crowdpower.plugins`` entry points."""

from __future__ import annotations

import pluggy
from flask import Flask, current_app
from werkzeug.utils import import_string

from crowdpower import hookspecs
from crowdpower.config import apply_defaults

hookimpl = pluggy.HookimplMarker("crowdpower")
ENTRY_POINT_GROUP = "crowdpower.plugins"


def build_plugin_manager(extra_plugins=(), load_entry_points: bool = True) -> pluggy.PluginManager:
    """Load every installed plugin and check that each hookimpl matches a spec.

    ``extra_plugins`` are objects or dotted import paths (config ``EXTRA_PLUGINS``). A
    hookimpl with a misspelt name or unknown arguments raises ``PluginValidationError``
    here, so ``create_app`` fails at boot instead of the hook silently never running.
    """
    pm = pluggy.PluginManager("crowdpower")
    pm.add_hookspecs(hookspecs)
    from crowdpower import internal_plugins  # a cycle: they import hookimpl from here

    for plugin in internal_plugins.PLUGINS:
        pm.register(plugin)
    if load_entry_points:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for plugin in extra_plugins:
        pm.register(import_string(plugin) if isinstance(plugin, str) else plugin)
    pm.check_pending()
    return pm


def init_app(app: Flask) -> None:
    pm = build_plugin_manager(
        extra_plugins=app.config.get("EXTRA_PLUGINS", ()),
        load_entry_points=app.config.get("LOAD_ENTRY_POINT_PLUGINS", True),
    )
    app.extensions["crowdpower.plugins"] = pm
    for defaults in pm.hook.crowdpower_config_defaults():
        apply_defaults(app.config, defaults or {})
    pm.hook.crowdpower_load_config(config=app.config)


def get_pm() -> pluggy.PluginManager:
    return current_app.extensions["crowdpower.plugins"]


def installed_integrations() -> list[dict]:
    """Plugin descriptors for the Integrations page, in registration order."""
    return [info for info in get_pm().hook.crowdpower_plugin_info() if info]


def get_pm_for(app: Flask) -> pluggy.PluginManager:
    return app.extensions["crowdpower.plugins"]
