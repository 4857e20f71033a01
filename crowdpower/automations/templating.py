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
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from flask import has_app_context
from jinja2 import TemplateSyntaxError, Undefined, UndefinedError
from jinja2.compiler import CodeGenerator
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from crowdpower.plugins import get_pm

MAX_OUTPUT = 256 * 1024          # characters of one rendered part
MAX_NUMBER_ARG = 10_000          # widths/counts passed to padding filters and str methods
MAX_RANGE = 1_000
MAX_INT_BITS = 256               # integers in templates stay below 2**256
MAX_SOURCE = 100_000             # characters of one template as written
MAX_RENDER_SECONDS = 1.0         # wall time of one render (checked on every template line)
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


def _size(value: Any) -> int:
    """Characters ``value`` contributes to a string built from it (sequences summed)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list | tuple):
        return sum(_size(v) for v in value) + len(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value.bit_length() // 3 + 1
    return 16


def _check_size(what: str, size: int) -> None:
    if size > MAX_OUTPUT:
        raise SecurityError(f"{what} would build more than {MAX_OUTPUT} characters")


def _check_int(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) \
            and value.bit_length() > MAX_INT_BITS:
        raise SecurityError(f"numbers are limited to {MAX_INT_BITS} bits in message templates")
    return value


def _join_filter(original):
    def join(eval_ctx, value, d="", attribute=None):
        items = list(value) if not isinstance(value, str) else value
        _check_size("join", _size(list(items)) + len(str(d)) * len(items))
        return original(eval_ctx, items, d, attribute)

    join.jinja_pass_arg = original.jinja_pass_arg  # type: ignore[attr-defined]
    return join


def _replace_filter(original):
    def replace(eval_ctx, s, old, new, count=None):
        text = str(s)
        _check_size("replace", len(text) + len(str(new)) * (len(text) + 1))
        return original(eval_ctx, s, old, new, count)

    replace.jinja_pass_arg = original.jinja_pass_arg  # type: ignore[attr-defined]
    return replace


class _BudgetCodeGenerator(CodeGenerator):
    """``a ~ b`` goes through ``environment.checked_concat``: string doubling is capped."""

    def visit_Concat(self, node, frame) -> None:  # noqa: N802 (Jinja's visitor naming)
        if frame.eval_ctx.volatile:
            func_name = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            func_name = "markup_join"
        else:
            func_name = "str_join"
        self.write(f"environment.checked_concat({func_name}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


@contextmanager
def render_deadline(seconds: float) -> Iterator[None]:
    """Abort a render after ``seconds``: a trace function (this thread only) checks the
    clock on every line of template code and every call, so loops cannot run away; single
    operations are bounded by the size caps."""
    deadline = time.monotonic() + seconds

    def tracer(frame, event, arg):
        if time.monotonic() > deadline:
            raise SecurityError(f"rendering took longer than {seconds:g}s")
        return tracer if frame.f_code.co_filename == "<template>" else None

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        yield
    finally:
        sys.settrace(previous)


class Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox with unsafe attribute access raising and allocation bombs capped."""

    intercepted_binops = frozenset({"*", "**", "%", "+", "-", "//", "/"})
    code_generator_class = _BudgetCodeGenerator

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters["money"] = money
        for name in ("center", "indent", "format", "wordwrap", "truncate", "batch", "slice"):
            self.filters[name] = _capped_filter(self, name)
        self.filters["join"] = _join_filter(self.filters["join"])
        self.filters["replace"] = _replace_filter(self.filters["replace"])
        self.globals["range"] = _range
        self.globals.pop("lipsum", None)

    def checked_concat(self, join, parts: tuple) -> str:
        _check_size("~", sum(_size(p) for p in parts))
        return join(parts)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        raise SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        _check_int(left)
        _check_int(right)
        if operator == "**" and isinstance(right, int | float) and abs(right) > 100:
            raise SecurityError("exponent too large")
        if operator == "**" and isinstance(left, int) and isinstance(right, int) \
                and right > 0 and left.bit_length() * right > MAX_INT_BITS:
            raise SecurityError(f"numbers are limited to {MAX_INT_BITS} bits")
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(count, int):
                    _check_size("repetition", _size(seq) * max(count, 0))
        if operator == "+" and isinstance(left, str | list | tuple):
            _check_size("+", _size(left) + _size(right))
        if operator == "%" and isinstance(left, str):
            _check_numbers("%", (left,), {})
        return _check_int(super().call_binop(context, operator, left, right))

    def wrap_str_format(self, value: Any):
        name = getattr(value, "__name__", "")
        if name in {"format", "format_map"} and isinstance(getattr(value, "__self__", None), str) \
                and _BIG_WIDTH.search(value.__self__):
            raise SecurityError("format: field width too large")
        return super().wrap_str_format(value)

    def call(__self, __context, __obj, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            name = getattr(__obj, "__name__", "call")
            _check_numbers(name, args, kwargs)
            if name == "replace" and len(args) >= 2:
                _check_size("replace", len(owner) + _size(args[1]) * (len(owner) + 1))
            if name == "join" and args:
                items = list(args[0])
                _check_size("join", _size(items) + len(owner) * len(items))
                args = (items, *args[1:])
        for value in (*args, *kwargs.values()):
            _check_int(value)
        return super().call(__context, __obj, *args, **kwargs)


HTML_ENV = Sandbox(autoescape=True)
TEXT_ENV = Sandbox(autoescape=False)


@lru_cache(maxsize=512)
def _compile(source: str, html: bool):
    return (HTML_ENV if html else TEXT_ENV).from_string(source)


def render(field: str, source: str, context: dict, html: bool = False) -> str:
    """Render one template; every failure (syntax, sandbox, runtime) is a ``TemplateError``."""
    if len(source or "") > MAX_SOURCE:
        raise TemplateError(field, f"longer than {MAX_SOURCE} characters")
    try:
        template = _compile(source or "", html)
        with render_deadline(MAX_RENDER_SECONDS):
            out = template.render(context)
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


def sample_traits() -> dict:
    """Example trait values the installed plugins offer (``crowdpower_sample_traits``)."""
    if not has_app_context():
        return {}
    found: dict = {}
    for batch in get_pm().hook.crowdpower_sample_traits():
        found.update(batch or {})
    return found


def sample_context(trigger: str, traits: dict | None = None) -> dict:
    return context(
        {"id": 0, "email": "jane@example.com", "name": "Jane Doe",
         "traits": sample_traits() if traits is None else traits},
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
