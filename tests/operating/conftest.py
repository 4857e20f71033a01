"""Fixtures of the operating tests: reuse the plugin's wired double and a scrape helper."""

from __future__ import annotations

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
