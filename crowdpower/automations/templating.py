"""Message templates: Jinja2 in an immutable sandbox, checked when saved, rendered per message.

Tenants write these templates, so they run in ``ImmutableSandboxedEnvironment`` with
extra guards: any unsafe attribute raises (instead of rendering empty), and the cheap
ways to allocate huge strings (``*``, ``**``, ``%``/``format`` widths, padding filters,
``range``) are capped. Saving compiles AND renders with a sample context, so a broken
or hostile template is refused at save time rather than discovered at send time.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from jinja2 import TemplateSyntaxError, Undefined, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

MAX_OUTPUT = 256 * 1024          # characters of one rendered part
MAX_NUMBER_ARG = 10_000          # widths/counts passed to padding filters and str methods
MAX_RANGE = 1_000
_BIG_WIDTH = re.compile(r"\d{5,}")

ZERO_DECIMAL = {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx",
                "vnd", "vuv", "xaf", "xof", "xpf"}
SYMBOLS = {"usd": "$"}


class TemplateError(ValueError):
    """A template that cannot be compiled or rendered; ``field`` names which one."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def money(value: Any, currency: Any = None) -> str:
    """``19.99|money('usd')`` → ``$19.99``; ``19.99|money('eur')`` → ``19.99 EUR``.

    Amounts are in major units (CONTRACT.md); anything not a number is shown as is.
    """
    if isinstance(value, Undefined) or value is None:
        return ""
    try:
        amount = float(value)
    except (TypeError, ValueError):
        return str(value)
    code = "" if isinstance(currency, Undefined) or not currency else str(currency).lower()
    digits = 0 if code in ZERO_DECIMAL else 2
    text = f"{amount:,.{digits}f}"
    if code in SYMBOLS:
        sign = "-" if amount < 0 else ""
        return f"{sign}{SYMBOLS[code]}{text.lstrip('-')}"
    return f"{text} {code.upper()}" if code else text


def _check_numbers(name: str, args: tuple, kwargs: dict) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_NUMBER_ARG:
            raise SecurityError(f"{name}: argument {value} is too large")
        if isinstance(value, str) and _BIG_WIDTH.search(value) and name in {"format", "%"}:
            raise SecurityError(f"{name}: field width too large")


def _capped_filter(env: ImmutableSandboxedEnvironment, name: str):
    original = env.filters[name]
    value_at = 1 if getattr(original, "jinja_pass_arg", None) else 0

    def capped(*args, **kwargs):
        _check_numbers(name, args[value_at + 1:], kwargs)
        value = args[value_at] if len(args) > value_at else None
        if name == "format" and isinstance(value, str) and _BIG_WIDTH.search(value):
            raise SecurityError("format: field width too large")
        return original(*args, **kwargs)

    capped.jinja_pass_arg = getattr(original, "jinja_pass_arg", None)  # type: ignore[attr-defined]
    return capped


def _range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise SecurityError(f"range is limited to {MAX_RANGE} items in message templates")
    return rng


class Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox with unsafe attribute access raising and allocation bombs capped."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters["money"] = money
        for name in ("center", "indent", "format", "wordwrap", "truncate", "batch", "slice"):
            self.filters[name] = _capped_filter(self, name)
        self.globals["range"] = _range

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        raise SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > 100:
            raise SecurityError("exponent too large")
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(count, int) \
                        and len(seq) * count > MAX_OUTPUT:
                    raise SecurityError("repetition too large")
        if operator == "%" and isinstance(left, str):
            _check_numbers("%", (left,), {})
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any):
        name = getattr(value, "__name__", "")
        if name in {"format", "format_map"} and isinstance(getattr(value, "__self__", None), str) \
                and _BIG_WIDTH.search(value.__self__):
            raise SecurityError("format: field width too large")
        return super().wrap_str_format(value)

    def call(__self, __context, __obj, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        if isinstance(getattr(__obj, "__self__", None), str):
            _check_numbers(getattr(__obj, "__name__", "call"), args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)


HTML_ENV = Sandbox(autoescape=True)
TEXT_ENV = Sandbox(autoescape=False)


@lru_cache(maxsize=512)
def _compile(source: str, html: bool):
    return (HTML_ENV if html else TEXT_ENV).from_string(source)


def render(field: str, source: str, context: dict, html: bool = False) -> str:
    """Render one template; every failure (syntax, sandbox, runtime) is a ``TemplateError``."""
    try:
        out = _compile(source or "", html).render(context)
    except TemplateSyntaxError as exc:
        raise TemplateError(field, f"syntax error on line {exc.lineno}: {exc.message}") from exc
    except SecurityError as exc:
        raise TemplateError(field, f"not allowed: {exc}") from exc
    except RecursionError as exc:
        raise TemplateError(field, "too deeply nested or recursive") from exc
    except Exception as exc:  # UndefinedError, TypeError, ZeroDivisionError, …
        raise TemplateError(field, f"{type(exc).__name__}: {exc}") from exc
    if len(out) > MAX_OUTPUT:
        raise TemplateError(field, f"renders to more than {MAX_OUTPUT} characters")
    return out


def context(customer: dict, event: dict, unsubscribe_url: str = "") -> dict:
    """What templates see: ``customer`` (email, name, traits), ``event`` (name, properties,
    occurred_at) and ``unsubscribe_url``. Plain dicts and lists only, copied."""
    plain = json.loads(json.dumps({"customer": customer, "event": {
        k: v for k, v in event.items() if k != "occurred_at"}}, default=str))
    plain["event"]["occurred_at"] = event.get("occurred_at")
    plain["unsubscribe_url"] = unsubscribe_url
    return plain


SAMPLE_PROPERTIES = {"amount": 19.99, "amount_due": 49.0, "currency": "usd",
                     "failure_message": "Your card was declined.", "invoice_id": "in_sample",
                     "plan_name": "Pro", "status": "past_due"}
SAMPLE_TRAITS = {"stripe_plan_name": "Pro", "stripe_plan_amount": 49.0, "stripe_currency": "usd",
                 "stripe_subscription_status": "active", "stripe_mrr": 49.0,
                 "stripe_trial_end_at": "2030-01-31T00:00:00Z",
                 "stripe_current_period_end_at": "2030-02-01T00:00:00Z"}


def sample_context(trigger: str) -> dict:
    return context(
        {"id": 0, "email": "jane@example.com", "name": "Jane Doe", "traits": SAMPLE_TRAITS},
        {"name": trigger, "properties": SAMPLE_PROPERTIES,
         "occurred_at": datetime(2030, 1, 1, 12, 0, tzinfo=UTC)},
        "https://example.com/u/sample")


def validate(fields: dict[str, str], trigger: str, json_fields: tuple[str, ...] = ()) -> dict:
    """Compile and render each template with a sample context; ``{field: message}`` of errors.

    A value missing from the sample (``UndefinedError``) is not an error: the real
    customer or event may have it. Fields in ``json_fields`` must render to JSON.
    """
    errors: dict[str, str] = {}
    sample = sample_context(trigger)
    for field, source in fields.items():
        if not source:
            continue
        try:
            out = render(field, source, sample, html=(field == "html"))
        except TemplateError as exc:
            if isinstance(exc.__cause__, UndefinedError):
                continue
            errors[field] = exc.message
            continue
        if field in json_fields:
            try:
                json.loads(out)
            except ValueError as exc:
                errors[field] = f"must render to JSON ({exc}); use the tojson filter for values"
    return errors
