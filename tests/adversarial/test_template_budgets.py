"""Hostile templates: refused at save (400) within a bounded time, failed at send."""

from __future__ import annotations

import time

import pytest

from crowdpower.automations import templating
from tests.automations.conftest import create_automation, customer, event, messages
from tests.conftest import api

BOMBS = [
    "{{ (((9 ** 99) ** 99) ** 99) ** 99 > 1 }}",
    "{{ 2 ** 100 * 2 ** 100 * 2 ** 100 }}",
    "{% for i in range(1000) %}{% for j in range(1000) %}{% for k in range(1000) %}"
    "{% endfor %}{% endfor %}{% endfor %}",
    "{% set s = 'a' * 200000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
    "{{ (['a' * 250000] * 400)|join }}",
    "{{ (['a' * 250000] * 400)|join|length }}",
    "{% set a = 'x' * 200000 %}{% set b = a ~ a %}{{ (b ~ b)|length }}",
    "{% set a = 'x' * 200000 %}{{ (a + a + a)|length }}",
    "{% set a = 'x' * 200000 %}{{ a.replace('x', a)|length }}",
    "{% set a = 'x' * 200000 %}{{ (a|replace('x', a))|length }}",
    "{% set a = 'x' * 1000 %}{{ a.join([a] * 1000)|length }}",
    "{{ '%0999999d'|format(1) }}",
    "{{ 'x'|center(99999999) }}",
    "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "{{ 'a' * (10 ** 9) }}",
    "x" * (templating.MAX_SOURCE + 1),
]


@pytest.mark.parametrize("source", BOMBS, ids=range(len(BOMBS)))
def test_bomb_is_refused_at_save_quickly(project, client, source):
    _pid, key = project
    started = time.monotonic()
    r = api(client, key).post("/api/v1/automations", json={
        "name": "Bomb", "trigger": "Stripe Charge Failed", "subject": "Hi", "text": source})
    assert time.monotonic() - started < 5
    assert r.status_code == 400, r.json
    assert r.json["error"]["code"] == "invalid_template"


def test_ordinary_templates_still_work():
    ctx = templating.sample_context("Stripe Charge Failed")
    out = templating.render("text", "{% for i in range(3) %}{{ i }}{% endfor %} "
                            "{{ 2 ** 10 }} {{ ['a', 'b']|join(',') }} {{ 'ab' * 3 }} "
                            "{{ customer.name ~ '!' }} {{ 'x'.replace('x', 'y') }}", ctx)
    assert out == "012 1024 a,b ababab Jane Doe! y"
    assert "lipsum" not in templating.TEXT_ENV.globals  # lipsum(n) had no cap


def test_render_deadline_stops_a_runaway_loop():
    source = "{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}"
    started = time.monotonic()
    with pytest.raises(templating.TemplateError, match="longer than"):
        templating.render("text", source, {"s": "a" * 100000})
    assert time.monotonic() - started < templating.MAX_RENDER_SECONDS + 1


def test_budget_exceeded_at_send_is_a_failed_message(project, client, smtp, drain):
    """Fine with the sample context at save, over budget with this event's data."""
    pid, key = project
    create_automation(client, key, text="{% for a in event.properties.s %}"
                                        "{% for b in event.properties.s %}{% endfor %}"
                                        "{% endfor %}")
    event(pid, customer(pid), properties={"s": "a" * 100000})
    drain()
    [row] = messages(client, key)
    assert row["state"] == "failed" and "longer than" in row["error"], row
    assert smtp.accepted == []
