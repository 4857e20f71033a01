"""Fixtures of the operating tests: reuse the plugin's wired double and a scrape helper."""

from __future__ import annotations

import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.stripe_plugin.conftest import wired  # noqa: F401  (fixture)


def scrape(client, token: str | None = None) -> dict[tuple[str, tuple], float]:
    """``/metrics`` as ``{(sample name, sorted labels): value}``."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.data
    out: dict[tuple[str, tuple], float] = {}
    for family in text_string_to_metric_families(response.data.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(autouse=True)
def _loggers_enabled():
    """These tests read log records: undo any earlier ``logging.config`` call in this process
    (fileConfig/dictConfig disable every logger that already exists)."""
    for logger in logging.Logger.manager.loggerDict.values():
        if isinstance(logger, logging.Logger):
            logger.disabled = False
    yield
