"""Settings: plugins declare their keys and defaults; the host reads the environment.

A plugin returns ``{KEY: default}`` from ``crowdpower_config_defaults``; every key is
then settable by an environment variable of the same name, converted to the default's
type (``int``, ``float``, ``bool``, ``list`` of comma-separated text; ``None``: text).
Values passed to ``create_app`` win over the environment, which wins over the default
(a value passed as ``None`` means the default).
"""

from __future__ import annotations

from typing import Any

from flask import current_app

from crowdpower.config import SettingError, apply_defaults, convert

__all__ = ["SettingError", "apply_defaults", "convert", "setting"]


def setting(key: str, default: Any = None) -> Any:
    """A setting of the running app (a plugin's own keys, or the host's)."""
    return current_app.config.get(key, default)
