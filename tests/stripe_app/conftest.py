"""Fixtures of the Stripe App tests: the plugin's and the sync's, App mode forced."""

from __future__ import annotations

import pytest

from tests.stripe_plugin.conftest import wired  # noqa: F401 - fixture
from tests.stripe_sync.conftest import start_sync, sync_settings, wait_sync  # noqa: F401


@pytest.fixture(autouse=True)
def app_connect_mode(app_config):
    """These tests are about Stripe App installs, whatever CROWDPOWER_TEST_STRIPE_KIND says."""
    app_config["STRIPE_CONNECT_MODE"] = "app"
