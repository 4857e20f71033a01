"""The template sandbox and the ``money`` filter (pure functions, no app needed)."""

from __future__ import annotations

import pytest

from crowdpower.automations.templating import TemplateError, money, render, sample_context


@pytest.mark.parametrize("value, currency, expected", [
    (19.99, "usd", "$19.99"), (19.99, "USD", "$19.99"), (19.99, "eur", "19.99 EUR"),
    (1234.5, "usd", "$1,234.50"), (-5, "usd", "-$5.00"), (500, "jpy", "500 JPY"),
    (7, None, "7.00"), ("n/a", "usd", "n/a"), (None, "usd", ""),
])
def test_money(value, currency, expected):
    assert money(value, currency) == expected


def test_templates_see_customer_event_and_unsubscribe_url():
    out = render("t", "{{ customer.email }} {{ customer.traits.stripe_plan_name }} "
                      "{{ event.name }} {{ event.occurred_at.strftime('%Y-%m-%d') }} "
                      "{{ event.properties.amount|money(event.properties.currency) }} "
                      "{{ unsubscribe_url }} [{{ customer.traits.missing }}]",
                 sample_context("Stripe Charge Failed", traits={"stripe_plan_name": "Pro"}))
    assert out == ("jane@example.com Pro Stripe Charge Failed 2030-01-01 $19.99 "
                   "https://example.com/u/sample []")


def test_html_is_autoescaped_text_is_not():
    ctx = {**sample_context("x"), "customer": {"name": "<b>Bo</b>"}}
    assert render("html", "{{ customer.name }}", ctx, html=True) == "&lt;b&gt;Bo&lt;/b&gt;"
    assert render("text", "{{ customer.name }}", ctx) == "<b>Bo</b>"


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__ }}", "{{ cycler.__init__.__globals__ }}",
    "{{ customer.__class__ }}", "{{ lipsum.__globals__ }}", "{{ 'a' * 10**8 }}",
    "{{ 2 ** 100000 }}", "{{ 'x'|center(10**8) }}", "{{ '%100000000d'|format(1) }}",
    "{{ '{:>100000000}'.format(1) }}", "{{ 'x'.ljust(10**8) }}",
    "{% for i in range(10**6) %}{% endfor %}", "{% if %}",
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
])
def test_sandbox_refuses(source):
    with pytest.raises(TemplateError):
        render("t", source, sample_context("x"))
