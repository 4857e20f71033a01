"""What the double refuses, derived from stripe-python (generated from Stripe's OpenAPI spec).

Nothing here is our reading of Stripe. For every endpoint the double serves, the SDK's
service class names the HTTP method, the path, the ``…Params`` TypedDict and the
resource it returns; the TypedDict gives the parameter names, which are required, their
types and enum values (``Literal[…]``), and the resource class's ``ExpandableField[…]``
annotations say which fields can be expanded. A ``stripe`` upgrade that changes any of
this changes the double with it (``tests/stripe_fidelity`` fails loudly if it breaks).

The rules, each answered with Stripe's error shape (400, ``invalid_request_error``):

* ``unknown``   a parameter the endpoint does not take → ``parameter_unknown``
* ``missing``   a required parameter is absent → ``parameter_missing``
* ``empty``     ``""`` for a parameter that cannot be unset → ``parameter_invalid_empty``
* ``enum``      a value outside the ``Literal`` values → "Invalid status: must be one of …"
* ``integer`` / ``boolean``  a value that is not one → ``parameter_invalid_integer`` / …
* ``limit``     ``limit`` outside 1–100 (the SDK's docstring of every list ``limit``)
* ``depth``     an expansion deeper than 4 levels
* ``expand``    an expansion of a field that is not expandable
* ``cursor``    ``starting_after``/``ending_before`` of an unknown id (``cursor_error``,
  raised by the list handler, which knows the ids) → ``resource_missing``
"""

from __future__ import annotations

import builtins
import functools
import importlib
import inspect
import re
import sys
import types
import typing
from dataclasses import dataclass
from typing import Any

import stripe
import stripe.params
import typing_extensions
from stripe._request_options import RequestOptions

MAX_EXPAND_DEPTH = 4  # "Expansions have a maximum depth of four levels" (Stripe's docs)
LIMIT_RANGE = (1, 100)  # "Limit can range between 1 and 100" (every list's ``limit``)
# The SDK service modules of the endpoints the double serves.
SERVICES = ("_customer_service.CustomerService", "_subscription_service.SubscriptionService",
            "_charge_service.ChargeService", "_price_service.PriceService",
            "_product_service.ProductService", "_event_service.EventService",
            "_refund_service.RefundService", "_account_service.AccountService",
            "_dispute_service.DisputeService")
# Fields Stripe leaves out of an object unless asked with ``expand`` ("This field is not
# included by default. To include it in the response, expand the … field." in Stripe's API
# reference). The SDK types them as plain fields, so they are listed here.
INCLUDABLE = {("Price", "tiers"), ("Price", "currency_options")}
_REQUEST = re.compile(r'self\._request\(\s*"(get|post|delete)",\s*"(/v1/[^"]+)"')
_OPTIONS = set(RequestOptions.__annotations__)


class StripeError(Exception):
    """A request Stripe refuses: ``status`` and the fields of Stripe's ``error`` body."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None,
                 status: int = 400, rule: str = "") -> None:
        super().__init__(message)
        self.message, self.param, self.code, self.status, self.rule = \
            message, param, code, status, rule


@dataclass(frozen=True)
class Endpoint:
    """One SDK method: ``GET /v1/subscriptions`` takes ``SubscriptionListParams`` and
    returns a list of ``Subscription``."""

    method: str
    template: str          # "/v1/subscriptions/{subscription_exposed_id}"
    pattern: re.Pattern
    params: type           # the TypedDict
    resource: type | None  # the resource class (None if unknown)
    is_list: bool


# -- deriving the rules from the SDK -----------------------------------------------------

def _name_in(annotation: Any) -> str | None:
    """``Optional["SubscriptionListParams"]`` → ``"SubscriptionListParams"``."""
    found = re.findall(r"[\"']?(\w+Params)[\"']?", str(annotation))
    return found[0] if found else None


@functools.cache
def endpoints() -> tuple[Endpoint, ...]:
    """Every (method, path) of the served services, from the SDK's own source."""
    out = []
    for spec in SERVICES:
        module_name, cls_name = spec.split(".")
        cls = getattr(importlib.import_module(f"stripe.{module_name}"), cls_name)
        for name, fn in inspect.getmembers(cls, inspect.isfunction):
            if name.startswith("_") or name.endswith("_async"):
                continue
            match = _REQUEST.search(inspect.getsource(fn))
            signature = inspect.signature(fn)
            if match is None or "params" not in signature.parameters:
                continue
            params_name = _name_in(signature.parameters["params"].annotation)
            params_cls = getattr(stripe.params, params_name or "", None)
            if params_cls is None:
                continue
            returned = str(signature.return_annotation)
            is_list = "ListObject[" in returned
            res_name = re.sub(r"^.*?(\w+)\]?[\"']?$", r"\1", returned.strip("'\""))
            resource = getattr(stripe, res_name, None)
            template = match.group(2)
            regex = re.sub(r"\\{\w+\\}", r"[^/]+", re.escape(template))
            out.append(Endpoint(match.group(1).upper(), template, re.compile(f"^{regex}$"),
                                params_cls, resource if isinstance(resource, type) else None,
                                is_list))
    # Literal paths before templated ones (``/v1/customers/search`` before ``/{customer}``).
    return tuple(sorted(out, key=lambda e: e.template.count("{")))


def endpoint_for(method: str, path: str) -> Endpoint | None:
    for ep in endpoints():
        if ep.method == method.upper() and ep.pattern.match(path):
            return ep
    return None


class _Names(dict):
    """Evaluation namespace: the defining module's names, then typing's."""

    def __missing__(self, key: str) -> Any:
        if hasattr(builtins, key):
            return getattr(builtins, key)
        if hasattr(typing, key):
            return getattr(typing, key)
        return Any


def _resolve(annotation: Any, module: str) -> Any:
    """Evaluate the SDK's string annotations (``NotRequired["Literal['a']|str"]``)."""
    if isinstance(annotation, typing.ForwardRef):
        annotation = annotation.__forward_arg__
    if isinstance(annotation, str):
        names = _Names(vars(sys.modules[module]))
        try:
            annotation = eval(annotation, {"__builtins__": __builtins__}, names)  # noqa: S307
        except Exception:
            return Any
    origin = typing.get_origin(annotation)
    if origin in (typing.NotRequired, typing.Required) or \
            getattr(origin, "_name", None) in ("NotRequired", "Required"):
        return _resolve(typing.get_args(annotation)[0], module)
    if str(origin).endswith(("NotRequired", "Required")):
        return _resolve(typing.get_args(annotation)[0], module)
    return annotation


@functools.cache
def fields_of(params_cls: type) -> dict[str, Any]:
    """``{name: resolved type}`` of a params TypedDict. The SDK's request options
    (``api_key``, ``stripe_account``…, inherited from ``RequestOptions``) are client-side
    settings, never request parameters: sent as parameters, Stripe calls them unknown."""
    return {k: _resolve(v, params_cls.__module__)
            for k, v in params_cls.__annotations__.items() if k not in _OPTIONS}


def required_of(params_cls: type) -> frozenset[str]:
    return frozenset(getattr(params_cls, "__required_keys__", set())) - _OPTIONS


def _is_typeddict(t: Any) -> bool:
    return isinstance(t, type) and typing_extensions.is_typeddict(t)


def _options(t: Any) -> list[Any]:
    origin = typing.get_origin(t)
    if origin is typing.Union or isinstance(t, types.UnionType):
        out = []
        for a in typing.get_args(t):
            out += _options(a)
        return out
    return [t]


def enum_values(t: Any) -> list[str]:
    """The ``Literal`` values a parameter's type allows (``''`` left out)."""
    return [v for o in _options(t) if typing.get_origin(o) is typing.Literal
            for v in typing.get_args(o) if v != ""]


# -- checking a request ------------------------------------------------------------------

def validate(method: str, path: str, params: dict) -> Endpoint | None:
    """Raise ``StripeError`` for what Stripe refuses; return the endpoint (None if the SDK
    has no such endpoint: the router answers that)."""
    ep = endpoint_for(method, path)
    if ep is None:
        return None
    _check_object(params, ep.params, "", top=True)
    if "limit" in params and ep.is_list:
        limit = int(params["limit"])  # an integer by now
        if limit < LIMIT_RANGE[0]:
            raise StripeError(f"This value must be greater than or equal to {LIMIT_RANGE[0]}.",
                              "limit", "parameter_invalid_integer", rule="limit")
        if limit > LIMIT_RANGE[1]:
            raise StripeError(f"This value must be less than or equal to {LIMIT_RANGE[1]}.",
                              "limit", "parameter_invalid_integer", rule="limit")
    expand = params.get("expand") or []
    for path_ in expand if isinstance(expand, list) else [expand]:
        check_expansion(ep, path_)
    return ep


def _key(prefix: str, name: str) -> str:
    return f"{prefix}[{name}]" if prefix else name


def _check_object(value: Any, cls: type, prefix: str, top: bool = False) -> None:
    if not isinstance(value, dict):
        raise StripeError("Invalid object", prefix or None, rule="type")
    fields = fields_of(cls)
    for name in value:
        if name not in fields:
            raise StripeError(f"Received unknown parameter: {_key(prefix, name)}",
                              _key(prefix, name), "parameter_unknown", rule="unknown")
    for name in sorted(required_of(cls)):
        if name not in value:
            raise StripeError(f"Missing required param: {_key(prefix, name)}.",
                              _key(prefix, name), "parameter_missing", rule="missing")
    for name, v in value.items():
        _check_value(v, fields[name], _key(prefix, name))


def _param_type(t: Any) -> Any:
    """A nested ``ForwardRef('SubscriptionCreateParamsItem')`` → the TypedDict."""
    if isinstance(t, typing.ForwardRef | str):
        name = t.__forward_arg__ if isinstance(t, typing.ForwardRef) else t
        found = getattr(stripe.params, name, None)
        return found if found is not None else _resolve(name, "stripe.params")
    return t


def _shape(value: Any, t: Any) -> bool:
    """Whether an option of a union is the kind of thing the value is (dict/list/scalar)."""
    origin = typing.get_origin(t)
    if isinstance(value, dict):
        return _is_typeddict(t) or origin in (dict, typing.Dict)  # noqa: UP006
    if isinstance(value, list):
        return origin in (list, typing.List)  # noqa: UP006
    return not (_is_typeddict(t) or origin in (dict, list, typing.Dict, typing.List))  # noqa: UP006


def _check_value(value: Any, t: Any, param: str) -> None:
    options = [_param_type(o) for o in _options(_param_type(t))]
    if any(_shape(value, o) for o in options) and not any(o is Any for o in options):
        options = [o for o in options if _shape(value, o)]
    if value == "":
        if any(typing.get_origin(o) is typing.Literal and "" in typing.get_args(o)
               for o in options) or Any in options:
            return
        raise StripeError(
            f"You passed an empty string for '{param}'. We assume empty values are an "
            f"attempt to unset a parameter; however '{param}' cannot be unset. You should "
            f"remove '{param}' from your request or supply a non-empty value.",
            param, "parameter_invalid_empty", rule="empty")
    enum = enum_values(t)
    errors: list[StripeError] = []
    for option in options:
        if option is str and enum:
            continue  # ``Literal[...]|str``: the ``str`` is the SDK's forward compatibility
        try:
            _check_one(value, option, param)
            return
        except StripeError as exc:
            errors.append(exc)
    if enum and isinstance(value, str):
        listed = ", ".join(enum[:-1]) + (f", or {enum[-1]}" if len(enum) > 1 else enum[0])
        raise StripeError(f"Invalid {param.rsplit('[', 1)[-1].rstrip(']')}: must be one of "
                          f"{listed}", param, rule="enum")
    raise errors[-1] if errors else StripeError(f"Invalid value for {param}.", param)


def _check_one(value: Any, t: Any, param: str) -> None:
    origin = typing.get_origin(t)
    if t is Any or t is object:
        return
    if origin is typing.Literal or str(origin).endswith("Literal"):
        if value in typing.get_args(t):
            return
        raise StripeError(f"Invalid {param}", param, rule="enum")
    if t is str:
        if isinstance(value, str):
            return
        raise StripeError(f"Invalid string: {value}", param, "parameter_invalid_string",
                          rule="type")
    if t is bool:
        if value in ("true", "false", True, False):
            return
        raise StripeError(f"Invalid boolean: {value}", param, rule="boolean")
    if t is int:
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
            return
        raise StripeError(f"Invalid integer: {value}", param, "parameter_invalid_integer",
                          rule="integer")
    if t is float:
        try:
            float(value)
            return
        except (TypeError, ValueError):
            raise StripeError(f"Invalid decimal: {value}", param, rule="type") from None
    if origin in (list, typing.List):  # noqa: UP006
        (inner,) = typing.get_args(t) or (Any,)
        items = value if isinstance(value, list) else None
        if items is None:
            raise StripeError("Invalid array", param, rule="type")
        for i, item in enumerate(items):
            _check_value(item, inner, f"{param}[{i}]")
        return
    if origin in (dict, typing.Dict):  # noqa: UP006
        if isinstance(value, dict):
            return
        raise StripeError("Invalid object", param, rule="type")
    if _is_typeddict(t):
        _check_object(value, t, param)
        return
    if isinstance(value, dict | list):  # a nested value where the SDK takes a scalar
        raise StripeError(f"Invalid {getattr(t, '__name__', 'value')}", param, rule="type")
    # Other scalar types the SDK names (e.g. ``datetime`` helpers) are taken as given.


# -- expansions ----------------------------------------------------------------------------

def _annotation(cls: type, name: str) -> Any:
    for klass in cls.__mro__:
        ann = getattr(klass, "__annotations__", {})
        if name in ann:
            return ann[name]
    return None


def _resource(ref: Any) -> Any:
    """A ForwardRef/str to one of the SDK's resource classes (``Any`` if unknown)."""
    if isinstance(ref, typing.ForwardRef):
        ref = ref.__forward_arg__
    if isinstance(ref, str):
        found = getattr(stripe, ref, None)
        return found if isinstance(found, type) else Any
    return ref


def _unwrap_optional(t: Any) -> Any:
    args = [a for a in _options(t) if a is not type(None)]
    return args[0] if len(args) == 1 else (typing.Union[tuple(args)] if args else t)  # noqa: UP007


def _expandable(t: Any) -> tuple[bool, Any]:
    """``ExpandableField[X]`` (``Union[str, X]``) → (True, X); otherwise (False, t)."""
    opts = [o for o in _options(t) if o is not type(None)]
    if str in opts and len(opts) >= 2:
        rest = [o for o in opts if o is not str]
        if all(isinstance(o, typing.ForwardRef | type) for o in rest) and not any(
                typing.get_origin(o) is typing.Literal for o in rest):
            return True, _resource(rest[0])
    return False, t


def check_expansion(ep: Endpoint, path: str) -> None:
    """Refuse an expansion deeper than 4 levels or through a non-expandable field."""
    parts = path.split(".")
    if len(parts) > MAX_EXPAND_DEPTH:
        raise StripeError("You cannot expand more than 4 levels of a property.", "expand",
                          rule="depth")
    if ep.resource is None:
        return
    current: Any = ep.resource
    in_list = ep.is_list
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if in_list:
            if part != "data":
                hint = (f" You may want to try expanding 'data.{path}' instead."
                        if i == 0 else "")
                raise StripeError(f"This property cannot be expanded ({part}).{hint}",
                                  "expand", rule="expand")
            in_list = False
            if last:
                raise StripeError(f"This property cannot be expanded ({part}).", "expand",
                                  rule="expand")
            continue
        if current is Any:
            return  # an untyped corner of the SDK: nothing to check against
        ann = _annotation(current, part)
        if ann is None:
            raise StripeError(f"This property cannot be expanded ({part}).", "expand",
                              rule="expand")
        t = _unwrap_optional(ann)
        if typing.get_origin(t) in (list, typing.List):  # noqa: UP006
            t = _unwrap_optional(typing.get_args(t)[0])
        if isinstance(t, typing.ForwardRef | str):  # a nested resource (``price: "Price"``)
            t = _resource(t)
        expandable, target = _expandable(t)
        if last and (getattr(current, "__name__", ""), part) in INCLUDABLE:
            return
        if last:
            if not expandable:
                raise StripeError(f"This property cannot be expanded ({part}).", "expand",
                                  rule="expand")
            return
        if expandable:
            current = target
            continue
        origin = typing.get_origin(t)
        if origin is not None and getattr(origin, "__name__", "") == "ListObject":
            current, in_list = _resource(typing.get_args(t)[0]), True
            continue
        if isinstance(t, type) and issubclass(t, stripe.StripeObject):
            current = t
            continue
        raise StripeError(f"This property cannot be expanded ({part}).", "expand",
                          rule="expand")


def cursor_error(param: str, kind: str, obj_id: str) -> StripeError:
    """``starting_after``/``ending_before`` naming an object that does not exist."""
    return StripeError(f"No such {kind}: '{obj_id}'", param, "resource_missing", status=404,
                       rule="cursor")
