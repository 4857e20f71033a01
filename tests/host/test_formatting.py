"""Readable values: money with its currency, relative times with the exact one, sentences."""

from __future__ import annotations

from datetime import UTC, datetime

from crowdpower.formatting import (
    format_property,
    format_trait,
    format_value,
    money,
    render_sentence,
)

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_money_reads_its_currency():
    assert money(29, "usd") == "$29.00"
    assert money(1234.5, "eur") == "€1,234.50"
    assert money(1000, "jpy") == "¥1,000"
    assert money(5, "chf") == "5.00 CHF"
    assert money(1.234, "kwd") == "1.234 KWD"
    assert money(-3, "gbp") == "-£3.00"


def test_times_are_relative_with_the_exact_time_kept():
    shown = format_value("2026-11-27T11:00:00Z", "datetime", now=NOW)
    assert shown.text == "3 days ago" and shown.exact == "2026-11-27 11:00:00 UTC"
    assert format_value("2026-12-05T12:00:00Z", "datetime", now=NOW).text == "in 5 days"
    assert format_value("2026-11-30T11:59:50Z", "datetime", now=NOW).text == "just now"


def test_booleans_lists_and_nothing():
    assert format_value(False).text == "No" and format_value(True).text == "Yes"
    assert format_value(["cus_1", "cus_2"]).items == ("cus_1", "cus_2")
    assert format_value(None).kind == "empty" and format_value(None).text == "—"
    assert format_value(29.0).text == "29"


def test_a_money_trait_takes_the_currency_from_its_currency_trait():
    specs = {"mrr": {"type": "number", "format": "money", "currency_trait": "cur"},
             "since": {"type": "date"}}
    traits = {"mrr": 29, "cur": "usd", "since": "2026-11-29T12:00:00Z"}
    assert format_trait("mrr", traits, specs).text == "$29.00"
    assert format_trait("since", traits, specs, now=NOW).text == "1 day ago"


def test_a_money_trait_reads_its_fallback_currency_trait_when_its_own_is_unset():
    specs = {"spent": {"type": "number", "format": "money", "currency_trait": "spent_cur",
                       "currency_fallback_trait": "cur"}}
    assert format_trait("spent", {"spent": 476, "spent_cur": "usd", "cur": "gbp"},
                        specs).text == "$476.00"
    assert format_trait("spent", {"spent": 476, "cur": "gbp"}, specs).text == "£476.00"
    assert format_trait("spent", {"spent": 476}, specs).text == "476.00"
    assert format_value("usd", "currency").text == "USD"


def test_event_properties_and_sentences():
    props = {"amount": 29.0, "currency": "usd", "failure_message": "Card declined.",
             "description": None, "created_at": "2026-11-29T12:00:00Z"}
    assert format_property("amount", props, {"amount": "money"}).text == "$29.00"
    assert format_property("created_at", props, {}, now=NOW).text == "1 day ago"
    sentence = "Charge of {amount:money} failed[ — {failure_message}]"
    assert render_sentence(sentence, props) == "Charge of $29.00 failed — Card declined."
    assert render_sentence(sentence, {**props, "failure_message": None}) == \
        "Charge of $29.00 failed"
    assert render_sentence("Paid[ for {description}]", props) == "Paid"
