"""Human-readable values: money with its currency, times as "3 days ago", yes/no, lists,
and event sentences. Pure functions; the web layer wraps them in HTML.

Plugins declare how their values read through their trait and event definitions (hooks
``crowdpower_trait_definitions`` / ``crowdpower_event_definitions``): a trait's ``format``
(``money``, ``datetime``, ``boolean``, ``list``, ``number``, ``code``, ``currency``,
``text``; by default
from its ``type``) and ``currency_trait`` (the trait naming a money trait's currency;
``currency_fallback_trait`` is read when that one is not set, e.g. on older data); an
event's ``formats`` (property → format; money properties take their currency from the
``currency`` property) and ``sentence`` (see :func:`render_sentence`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# Symbols we print before the amount; every other currency is written after it ("29.00 CHF").
CURRENCY_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥", "inr": "₹", "krw": "₩",
                    "cad": "CA$", "aud": "A$", "nzd": "NZ$", "brl": "R$", "mxn": "MX$"}
# Currencies without minor units (ISO 4217 exponent 0): amounts are printed without decimals.
ZERO_DECIMAL = {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx",
                "vnd", "vuv", "xaf", "xof", "xpf"}
THREE_DECIMAL = {"bhd", "jod", "kwd", "omr", "tnd"}
TYPE_FORMATS = {"date": "datetime", "boolean": "boolean", "list": "list", "number": "number"}


@dataclass(frozen=True)
class Shown:
    """A value as shown: its text, and the exact value for a tooltip (or None)."""

    text: str
    exact: str | None = None
    kind: str = "text"          # text | datetime | money | boolean | list | empty | code
    items: tuple[str, ...] = ()


def money(amount: Any, currency: str | None) -> str:
    """19.99 usd → "$19.99"; 1000 jpy → "¥1,000"; 5 chf → "5.00 CHF"."""
    try:
        value = float(amount)
    except (TypeError, ValueError):
        return str(amount)
    code = (currency or "").lower()
    places = 0 if code in ZERO_DECIMAL else 3 if code in THREE_DECIMAL else 2
    sign = "-" if value < 0 else ""
    number = f"{abs(value):,.{places}f}"
    if not code:
        return sign + number
    symbol = CURRENCY_SYMBOLS.get(code)
    return f"{sign}{symbol}{number}" if symbol else f"{sign}{number} {code.upper()}"


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 string (``Z`` or offset; naive = UTC) or a datetime → aware UTC."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and re.match(r"^\d{4}-\d{2}-\d{2}", value):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def relative(moment: datetime, now: datetime | None = None) -> str:
    """"just now", "5 minutes ago", "in 3 days", "2 years ago"."""
    now = now or datetime.now(UTC)
    seconds = (now - moment).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 45:
        return "just now"
    for size, unit in ((31_536_000, "year"), (2_592_000, "month"), (604_800, "week"),
                       (86_400, "day"), (3_600, "hour"), (60, "minute")):
        if seconds >= size * 0.95:
            count = max(1, round(seconds / size))
            words = f"{count} {unit}{'' if count == 1 else 's'}"
            return f"in {words}" if future else f"{words} ago"
    return "in a minute" if future else "a minute ago"


def exact_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def format_value(value: Any, fmt: str | None = None, currency: str | None = None,
                 now: datetime | None = None) -> Shown:
    """One value in a format (None: guessed from the value)."""
    if value is None or value == "" or value == []:
        return Shown("—", kind="empty")
    if fmt == "money":
        return Shown(money(value, currency), exact=f"{value} {(currency or '').upper()}".strip(),
                     kind="money")
    if fmt == "datetime" or (fmt is None and isinstance(value, str) and parse_time(value)
                             and re.match(r"^\d{4}-\d{2}-\d{2}T", value)):
        moment = parse_time(value)
        if moment is not None:
            return Shown(relative(moment, now), exact=exact_time(moment), kind="datetime")
    if isinstance(value, bool) or fmt == "boolean":
        truthy = value is True or str(value).lower() in ("true", "1", "yes")
        return Shown("Yes" if truthy else "No", kind="boolean")
    if isinstance(value, list | tuple) or fmt == "list":
        items = tuple(str(v) for v in (value if isinstance(value, list | tuple) else [value]))
        return Shown(", ".join(items), kind="list", items=items)
    if isinstance(value, dict):
        return Shown(", ".join(f"{k}: {v}" for k, v in value.items()), kind="text")
    if isinstance(value, float) and value.is_integer() and fmt != "money":
        return Shown(f"{int(value):,}" if fmt == "number" else str(int(value)))
    if isinstance(value, int) and fmt == "number":
        return Shown(f"{value:,}")
    if fmt == "code":
        return Shown(str(value), kind="code")
    if fmt == "currency":  # an ISO 4217 code, as people write it
        return Shown(str(value).upper())
    return Shown(str(value))


def trait_format(spec: dict | None) -> str | None:
    if not spec:
        return None
    return spec.get("format") or TYPE_FORMATS.get(spec.get("type", ""))


def format_trait(key: str, traits: dict, specs: dict[str, dict],
                 now: datetime | None = None) -> Shown:
    """A customer's trait, formatted by its definition (money reads its currency trait)."""
    spec = specs.get(key) or {}
    currency = None
    for name in (spec.get("currency_trait"), spec.get("currency_fallback_trait")):
        currency = currency or (traits.get(name) if name else None)
    return format_value(traits.get(key), trait_format(spec), currency, now)


def format_property(name: str, properties: dict, formats: dict[str, str],
                    now: datetime | None = None) -> Shown:
    """An event property; money reads the event's ``currency`` property."""
    fmt = formats.get(name)
    if fmt is None and name.endswith("_at"):
        fmt = "datetime"
    return format_value(properties.get(name), fmt, properties.get("currency"), now)


_PLACEHOLDER = re.compile(r"\{(\w+)(?::(\w+))?\}")
_OPTIONAL = re.compile(r"\[([^\[\]]*)\]")


def render_sentence(template: str, properties: dict, now: datetime | None = None) -> str:
    """``"Charge of {amount:money} failed[ — {failure_message}]"`` → "Charge of $29.00
    failed — Your card was declined." A ``[…]`` part is left out when a value inside is
    empty; ``{name:format}`` formats like :func:`format_value`."""

    def value(match: re.Match) -> str | None:
        shown = format_value(properties.get(match.group(1)), match.group(2),
                             properties.get("currency"), now)
        return None if shown.kind == "empty" else shown.text

    def optional(match: re.Match) -> str:
        part = match.group(1)
        values = [value(m) for m in _PLACEHOLDER.finditer(part)]
        if any(v is None for v in values):
            return ""
        return _PLACEHOLDER.sub(lambda m: value(m) or "", part)

    text = _OPTIONAL.sub(optional, template)
    return _PLACEHOLDER.sub(lambda m: value(m) or "—", text)

