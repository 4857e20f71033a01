"""The double's HTTP side: Stripe's REST API (``/v1``), Connect OAuth and a control page.

Speaks Stripe's wire protocol closely enough that the real ``stripe`` SDK and authlib
talk to it unchanged: form-encoded bodies with bracketed keys, Bearer secret keys,
``Stripe-Account`` for connected accounts, Stripe's list envelope and error format.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections import Counter
from typing import Any
from urllib.parse import urlencode

import orjson
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from crowdpower_stripe_double import control, validation
from crowdpower_stripe_double import objects as O  # noqa: N812
from crowdpower_stripe_double.apps import Apps
from crowdpower_stripe_double.faults import Faults
from crowdpower_stripe_double.seed import seed_account, seed_cases
from crowdpower_stripe_double.state import State
from crowdpower_stripe_double.webhooks import Webhooks

LISTS = {"customers": "customer", "subscriptions": "subscription", "charges": "charge",
         "prices": "price", "products": "product", "events": "event", "disputes": "dispute"}
PLATFORM = "acct_platform"


class _QuietHandler(WSGIRequestHandler):
    """No access log: the double serves thousands of requests in tests and benchmarks.

    Connections are not kept alive: werkzeug answers every request with ``Connection:
    close`` (after the response it drains the socket, which would swallow a kept-alive
    client's next request). A new connection costs well under a millisecond here; the
    encoding of a list page was what made the double slow (``_json``)."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


def parse_params(items: list[tuple[str, str]]) -> dict[str, Any]:
    """``expand[0]=a&created[gte]=1&items[0][price]=p`` → nested dicts/lists, like Stripe."""
    out: dict[str, Any] = {}
    for key, value in items:
        parts = key.replace("]", "").split("[")
        node: Any = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            nxt: Any = value if last else {}
            if isinstance(node, dict):
                if part == "":  # ``expand[]=a&expand[]=b``
                    part = str(len(node))
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, nxt)
    return _listify(out)


def _listify(node: Any) -> Any:
    """Index-keyed dicts become lists; ``metadata`` stays a dict (its keys may be digits)."""
    if isinstance(node, dict):
        if node and all(k.isdigit() or k == "" for k in node):
            return [_listify(node[k]) for k in sorted(node, key=lambda k: int(k or 0))]
        return {k: v if k == "metadata" else _listify(v) for k, v in node.items()}
    return node


class StripeDouble:
    """A loopback Stripe: ``start()`` returns its base URL for the app's ``STRIPE_*_BASE``."""

    def __init__(self, secret_key: str = "sk_test_double", client_id: str = "ca_double",
                 webhook_url: str | None = None, webhook_secrets: list[str] | None = None,
                 test_secret_key: str | None = None):
        self.secret_key, self.client_id = secret_key, client_id
        # Stripe Apps: ``secret_key`` is the platform's live-mode key, ``test_secret_key``
        # its test-mode key; each exchanges and refreshes tokens of its own mode only. The
        # test key is also the only key that reads test-mode objects of a live account (any
        # other key gets Stripe's "a similar object exists in test mode" 404).
        self.test_secret_key = test_secret_key
        self.apps = Apps()
        self.webhooks = Webhooks(webhook_url, webhook_secrets or [])
        self.state = State(emit=lambda acct, event: self.webhooks.submit(event))
        self.state.create_account(account_id=PLATFORM)
        self.faults = Faults()
        self.oauth_auto_approve: bool | str = False
        self.oauth_next_account: str | None = None
        self.codes: dict[str, dict] = {}
        self.tokens: dict[str, str] = {}   # access token → account
        self.token_requests: list[dict] = []
        self._counts: Counter[tuple[str | None, str, str]] = Counter()
        self.versions: Counter[str | None] = Counter()  # Stripe-Version of API requests
        self._count_lock = threading.Lock()
        self._oauth_lock = threading.Lock()  # a code is redeemed once, even when raced
        self.url_map = Map([
            Rule("/v1/<any(customers,subscriptions,charges,prices,products,events,disputes):kind>",
                 endpoint="list_or_create", methods=["GET", "POST"]),
            Rule("/v1/<any(customers,subscriptions,charges,prices,products,events,disputes)"
                 ":kind>/<oid>",
                 endpoint="one", methods=["GET", "POST", "DELETE"]),
            Rule("/v1/refunds", endpoint="refunds", methods=["POST"]),
            Rule("/v1/account", endpoint="account", methods=["GET"]),
            Rule("/oauth/authorize", endpoint="authorize", methods=["GET", "POST"]),
            Rule("/oauth/token", endpoint="token", methods=["POST"]),
            Rule("/oauth/deauthorize", endpoint="deauthorize", methods=["POST"]),
            Rule("/v1/oauth/token", endpoint="app_token", methods=["POST"]),
            Rule("/oauth/v2/<path:link>/authorize", endpoint="app_authorize",
                 methods=["GET", "POST"]),
            Rule("/_double/", endpoint="control", methods=["GET"]),
            Rule("/_double/action", endpoint="control_action", methods=["POST"]),
            Rule("/_double/api/<name>", endpoint="control_api", methods=["POST"]),
        ])
        self._server = None
        self._thread: threading.Thread | None = None
        self.base_url: str | None = None

    # -- life cycle -----------------------------------------------------------------
    def start(self, port: int = 0, host: str = "127.0.0.1") -> str:
        self._server = make_server(host, port, self, threaded=True,
                                   request_handler=_QuietHandler)
        self._server.daemon_threads = True
        self.base_url = f"http://{host}:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="stripe-double", daemon=True)
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        self.webhooks.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # -- the public Python API (tests, demo, bench) ----------------------------------
    def create_account(self, livemode: bool = False, email: str | None = None,
                       name: str | None = None) -> str:
        return self.state.create_account(livemode=livemode, email=email, name=name)

    def seed(self, account: str, customers: int = 100, seed: int = 0,
             now: int | None = None) -> dict[str, int]:
        return seed_account(self.state, account, customers, seed, now)

    def seed_cases(self, account: str, now: int | None = None) -> dict[str, str]:
        """One customer per awkward real-world shape (``seed.seed_cases``): ``{case: email}``."""
        return seed_cases(self.state, account, now)

    def __getattr__(self, name: str) -> Any:
        # create_customer, update_subscription, create_charge, refund_charge, emit, …
        if name in _STATE_METHODS:
            return getattr(self.state, name)
        raise AttributeError(name)

    def reset_request_log(self) -> None:
        with self._count_lock:
            self._counts.clear()
            self.versions.clear()

    def request_count(self, account: str | None = None, path: str | None = None,
                      method: str | None = None) -> int:
        """API requests received (faulted ones included), filtered by account/path/method."""
        with self._count_lock:
            return sum(n for (a, m, p), n in self._counts.items()
                       if (account is None or a == account) and (path is None or p == path)
                       and (method is None or m == method.upper()))

    def objects(self, account: str, kind: str) -> list[dict]:
        """Every object of a kind, rendered (for assertions)."""
        with self.state.lock:
            acct = self.state.account(account)
            return [acct.render(kind, c) for c in acct.collection(kind).items
                    if not c.get("deleted")]

    # -- WSGI -----------------------------------------------------------------------
    def __call__(self, environ: dict, start_response: Any) -> Any:
        request = Request(environ)
        try:
            endpoint, args = self.url_map.bind_to_environ(environ).match()
        except (NotFound, MethodNotAllowed):  # Stripe answers both with a JSON 404
            response = self._json(*O.error(404, "invalid_request_error",
                                           f"Unrecognized request URL ({request.method}: "
                                           f"{request.path})."))
            return response(environ, start_response)
        except HTTPException as exc:
            return exc(environ, start_response)
        if endpoint.startswith("control"):
            return control.handle(self, request, endpoint, args)(environ, start_response)
        if endpoint in ("authorize", "token", "deauthorize", "app_token", "app_authorize"):
            return getattr(self, "_" + endpoint)(request)(environ, start_response)
        # An App's access token names its account (no ``Stripe-Account`` header).
        account = request.headers.get("Stripe-Account") or self.apps.account_of(
            self._bearer(request) or "")
        with self._count_lock:
            self._counts[(account, request.method, request.path)] += 1
            self.versions[request.headers.get("Stripe-Version")] += 1
        verdict = self.faults.check(account)
        if verdict.delay:
            time.sleep(verdict.delay)
        if verdict.drop:
            sock = environ.get("werkzeug.socket")
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                finally:
                    sock.close()
            return Response(b"", status=500)(environ, start_response)
        if verdict.status == 429:
            response = self._json(*O.error(
                429, "invalid_request_error", "Request rate limit exceeded. Learn more about "
                "rate limits here https://stripe.com/docs/rate-limits.", code="rate_limit"))
        elif verdict.status:
            response = self._json(*O.error(verdict.status, "api_error",
                                           "An unknown error occurred (the double's fault)."))
            if verdict.should_retry is not None:
                response.headers["Stripe-Should-Retry"] = str(verdict.should_retry).lower()
        else:
            response = self._api(request, endpoint, args, account)
        response.headers["Request-Id"] = O.new_id("req", 14)
        response.headers["Stripe-Version"] = O.API_VERSION
        return response(environ, start_response)

    @staticmethod
    def _json(status: int, body: Any) -> Response:
        """orjson: a 100-charge page (≈280 KB) encodes in 0.1 ms instead of json's 1.2 ms."""
        return Response(orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS), status=status,
                        mimetype="application/json")

    @staticmethod
    def _bearer(request: Request) -> str | None:
        header = request.headers.get("Authorization", "")
        key = header[7:] if header.startswith("Bearer ") else None
        if key is None and request.authorization and request.authorization.username:
            key = request.authorization.username
        return key

    def _auth(self, request: Request, account: str | None) -> tuple[str | None, Response | None]:
        key = self._bearer(request)
        if not key:
            return None, self._json(*O.error(
                401, "invalid_request_error", "You did not provide an API key. You need to "
                "provide your API key in the Authorization header, using Bearer auth."))
        if key in self.apps.access:
            expand = [v for k, v in list(request.args.items(multi=True)) +
                      list(request.form.items(multi=True)) if k.startswith("expand")]
            target, refused = self.apps.check(key, request.path, expand)
            if refused is not None:
                status, type_, message, code = refused
                return None, self._json(*O.error(status, type_, message, code=code))
            if request.headers.get("Stripe-Account") not in (None, target):
                return None, self._json(*O.error(
                    403, "invalid_request_error", "An application access token can only "
                    "access its own account; do not send Stripe-Account with it.",
                    code="account_invalid"))
        elif key == self.secret_key or (key and key == self.test_secret_key):
            target = account or PLATFORM
        elif key in self.tokens and (account in (None, self.tokens[key])):
            target = self.tokens[key]
        else:
            return None, self._json(*O.error(401, "invalid_request_error",
                                             f"Invalid API Key provided: {key[:8]}****"))
        acct = self.state.accounts.get(target)
        if acct is None or not acct.connected:
            return None, self._json(*O.error(
                403, "invalid_request_error",
                f"The provided key '{key[:8]}****' does not have access to account "
                f"'{target}' (or that account does not exist). Application access may have "
                "been revoked.", code="account_invalid"))
        return target, None

    def _api(self, request: Request, endpoint: str, args: dict, account: str | None) -> Response:
        target, denied = self._auth(request, account)
        if denied is not None:
            return denied
        params = parse_params(list(request.args.items(multi=True)) +
                              list(request.form.items(multi=True)))
        test_key = bool(self.test_secret_key) and _bearer(request) == self.test_secret_key
        try:
            validation.validate(request.method, request.path, params)
        except validation.StripeError as exc:
            return self._refusal(exc)
        try:
            with self.state.lock:
                acct = self.state.account(target)  # type: ignore[arg-type]
                if endpoint == "account":
                    return self._json(200, acct.account_object())
            if endpoint == "list_or_create":
                if request.method == "GET":
                    return self._list(acct, LISTS[args["kind"]], params, request.path)
                return self._json(200, self._create(target, args["kind"], params))
            if endpoint == "refunds":
                return self._json(200, self._refund(target, acct, params))
            return self._one(target, acct, LISTS[args["kind"]], args["oid"], request.method,
                             params, test_key)
        except MissingParam as exc:
            return self._json(*O.error(400, "invalid_request_error",
                                       f"Missing required param: {exc.args[0]}.",
                                       code="parameter_missing", param=exc.args[0]))
        except LookupError as exc:
            kind, oid = exc.args if len(exc.args) == 2 else ("object", str(exc))
            return self._json(*O.missing(kind, oid))
        except (ValueError, TypeError) as exc:
            return self._json(*O.error(400, "invalid_request_error", str(exc)))

    def _refusal(self, exc: validation.StripeError) -> Response:
        return self._json(*O.error(exc.status, "invalid_request_error", exc.message,
                                   code=exc.code, param=exc.param))

    def _refund(self, target: str, acct: Any, params: dict) -> dict:
        """``POST /v1/refunds`` answers with the new refund (as Stripe does), not the charge."""
        charge_id = _required(params, "charge")
        with self.state.lock:
            known = {r["id"] for r in acct.refunds_of(charge_id)}
        charge = self.state.refund_charge(target, charge_id,
                                          int(params["amount"]) if params.get("amount") else None)
        return [r for r in charge["refunds"]["data"] if r["id"] not in known][-1]

    def _list(self, acct: Any, kind: str, params: dict, path: str) -> Response:
        limit = int(params.get("limit", 10))  # validated: an integer in 1..100
        keep = _filter(kind, params)
        expand = frozenset(params.get("expand") or [])
        with self.state.lock:
            try:
                cores, has_more = acct.collection(kind).page(
                    keep, limit, params.get("starting_after"), params.get("ending_before"),
                    customer=params.get("customer") if kind in ("subscription", "charge")
                    else None)
            except KeyError as exc:
                cursor = "starting_after" if params.get("starting_after") == exc.args[0] \
                    else "ending_before"
                return self._refusal(validation.cursor_error(cursor, kind, str(exc.args[0])))
            data = [acct.render(kind, c, expand) for c in cores]
        return self._json(200, {"object": "list", "data": data, "has_more": has_more,
                                "url": path})

    def _one(self, target: str, acct: Any, kind: str, oid: str, method: str,
             params: dict, test_key: bool = False) -> Response:
        if method == "GET":
            with self.state.lock:
                core = acct.collection(kind).get(oid)
                if core is None:
                    raise LookupError(kind, oid)
                key_live = False if test_key else acct.livemode
                if core.get("livemode", key_live) != key_live:  # another mode's data set
                    there, used = ("test", "live") if key_live else ("live", "test")
                    return self._json(*O.error(
                        404, "invalid_request_error",
                        f"No such {kind}: '{oid}'; a similar object exists in {there} mode, "
                        f"but a {used} mode key was used to make this request.",
                        code="resource_missing", param="id"))
                return self._json(200, acct.render(kind, core,
                                                   frozenset(params.get("expand") or [])))
        if method == "DELETE":
            if kind == "customer":
                return self._json(200, self.state.delete_customer(target, oid))
            if kind == "subscription":
                return self._json(200, self.state.cancel_subscription(target, oid))
            raise ValueError(f"{kind}s cannot be deleted")
        params.pop("expand", None)
        if kind == "customer":
            # As Stripe: "" unsets a field; metadata keys merge into the old ones ("" drops one).
            fields: dict[str, Any] = {k: params[k] or None for k in ("email", "name")
                                      if k in params}
            if isinstance(params.get("metadata"), dict):
                with self.state.lock:
                    old = (acct.customers.get(oid) or {}).get("metadata") or {}
                merged = {**old, **params["metadata"]}
                fields["metadata"] = {k: v for k, v in merged.items() if v != ""}
            elif params.get("metadata") == "":
                fields["metadata"] = {}
            return self._json(200, self.state.update_customer(target, oid, **fields))
        if kind == "subscription":
            changes: dict[str, Any] = {}
            if "cancel_at_period_end" in params:
                changes["cancel_at_period_end"] = params["cancel_at_period_end"] == "true"
            items = params.get("items") or []
            price = items[0].get("price") if items else None
            quantity = items[0].get("quantity") if items else None
            return self._json(200, self.state.update_subscription(
                target, oid, price=price, quantity=int(quantity) if quantity else None,
                **changes))
        raise ValueError(f"{kind}s cannot be updated here")

    def _create(self, target: str, kind: str, params: dict) -> dict:
        if kind == "customers":
            return self.state.create_customer(target, email=params.get("email"),
                                              name=params.get("name"),
                                              metadata=params.get("metadata"))
        if kind == "products":
            return self.state.create_product(target, params.get("name") or "Product")
        if kind == "prices":
            recurring = params.get("recurring") or {}
            product_data = params.get("product_data") or {}
            tiers = [{k: int(v) if k in ("up_to", "unit_amount", "flat_amount") and v != "inf"
                      else (None if v == "inf" else v) for k, v in t.items()}
                     for t in params.get("tiers") or []]
            if params.get("billing_scheme") == "tiered" and not tiers:
                raise MissingParam("tiers")
            unit = params.get("unit_amount")
            if not tiers and unit is None and params.get("unit_amount_decimal") is None:
                raise MissingParam("unit_amount")
            transform = params.get("transform_quantity")
            return self.state.create_price(
                target, int(unit) if unit is not None else None,
                _required(params, "currency"), recurring.get("interval", "month"),
                int(recurring.get("interval_count", 1)),
                product=params.get("product"), product_name=product_data.get("name"),
                nickname=params.get("nickname"),
                unit_amount_decimal=params.get("unit_amount_decimal"),
                usage_type=recurring.get("usage_type", "licensed"), tiers=tiers or None,
                tiers_mode=params.get("tiers_mode"),
                transform_quantity={"divide_by": int(transform["divide_by"]),
                                    "round": transform["round"]} if transform else None)
        if kind == "subscriptions":
            items = params.get("items") or []
            if not items or not items[0].get("price"):
                raise MissingParam("items[0][price]")
            trial = params.get("trial_period_days")
            return self.state.create_subscription(
                target, _required(params, "customer"), items[0]["price"],
                int(items[0].get("quantity", 1)), trial_days=int(trial) if trial else None,
                more_items=[(i["price"], int(i.get("quantity", 1))) for i in items[1:]],
                coupons=[d["coupon"] for d in params.get("discounts") or [] if d.get("coupon")])
        if kind == "charges":
            return self.state.create_charge(target, params.get("customer"),
                                            int(_required(params, "amount")),
                                            params.get("currency", "usd"))
        raise ValueError(f"{kind} cannot be created here")

    # -- Connect OAuth --------------------------------------------------------------
    def _oauth_error(self, status: int, error: str, description: str) -> Response:
        return self._json(status, {"error": error, "error_description": description})

    def _authorize(self, request: Request) -> Response:
        params = request.values
        if params.get("client_id") != self.client_id:
            return Response(control.page("Stripe Connect", "<p class=err>Invalid client_id: "
                                         "no application matches this client id.</p>"),
                            status=400, mimetype="text/html")
        redirect_uri = params.get("redirect_uri")
        if not redirect_uri:
            return Response(control.page("Stripe Connect", "<p class=err>No redirect_uri.</p>"),
                            status=400, mimetype="text/html")
        decision = params.get("decision") if request.method == "POST" else None
        if request.method == "GET" and self.oauth_auto_approve:
            decision = "deny" if self.oauth_auto_approve == "deny" else "approve"
        if decision is None:
            return Response(control.consent_page(self, params), mimetype="text/html")
        query: dict[str, str] = {}
        if decision == "approve":
            account = params.get("account") or self.oauth_next_account
            if not account or account not in self.state.accounts or account == PLATFORM:
                account = self.state.create_account(livemode=False)
            code = "ac_" + secrets.token_urlsafe(24)
            self.codes[code] = {"account": account, "used": False, "token": None,
                                "scope": params.get("scope") or "read_only",
                                "created": time.time()}
            query = {"code": code, "scope": self.codes[code]["scope"]}
        else:
            query = {"error": "access_denied", "error_description": "The user denied your request"}
        if params.get("state") is not None:
            query["state"] = params["state"]
        sep = "&" if "?" in redirect_uri else "?"
        return Response(status=302, headers={"Location": redirect_uri + sep + urlencode(query)})

    def _platform_key(self, request: Request) -> str | None:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return header[7:]
        if request.authorization and request.authorization.type == "basic":
            return request.authorization.password or request.authorization.username
        return request.form.get("client_secret")

    def _token(self, request: Request) -> Response:
        form = request.form
        self.token_requests.append({"grant_type": form.get("grant_type"),
                                    "code": form.get("code"), "at": time.time()})
        if self._platform_key(request) != self.secret_key:
            return self._oauth_error(401, "invalid_client", "Invalid client secret.")
        if form.get("grant_type") != "authorization_code":
            return self._oauth_error(400, "unsupported_grant_type",
                                     f"Unsupported grant type: {form.get('grant_type')}")
        with self._oauth_lock:
            code = self.codes.get(form.get("code", ""))
            if code is None:
                return self._oauth_error(400, "invalid_grant", "Authorization code does not "
                                         f"exist: {form.get('code')}")
            reused, code["used"] = code["used"], True
            if not reused:
                acct = self.state.account(code["account"])
                acct.connected = True
                mode = "live" if acct.livemode else "test"
                token = f"sk_{mode}_" + secrets.token_urlsafe(24)
                code["token"] = token
                self.tokens[token] = acct.id
        if reused:
            # As Stripe does: a reused code revokes everything issued with it.
            self.tokens.pop(code["token"], None)
            acct = self.state.accounts.get(code["account"])
            if acct is not None and acct.connected:
                self.state.deauthorize(code["account"], self.client_id)
            return self._oauth_error(400, "invalid_grant", "This authorization code has "
                                     "already been used. All tokens issued with this "
                                     "authorization code have been revoked.")
        return self._json(200, {"access_token": token, "livemode": acct.livemode,
                                "refresh_token": "rt_" + secrets.token_urlsafe(24),
                                "token_type": "bearer", "scope": code["scope"],
                                "stripe_publishable_key": f"pk_{mode}_" + secrets.token_hex(12),
                                "stripe_user_id": acct.id})

    # -- Stripe Apps OAuth 2.0 (see double/apps.py) ----------------------------------
    def _app_authorize(self, request: Request) -> Response:
        """The install link: ``/oauth/v2/[test/]<link>/authorize?client_id=…``."""
        params = request.values
        livemode = not request.path.startswith("/oauth/v2/test/")
        if params.get("client_id") != self.apps.client_id(livemode):
            return Response(control.page("Stripe Apps", "<p class=err>Invalid client_id: no "
                                         "app matches this client id in this mode.</p>"),
                            status=400, mimetype="text/html")
        redirect_uri = params.get("redirect_uri")
        if not redirect_uri:
            return Response(control.page("Stripe Apps", "<p class=err>No redirect_uri.</p>"),
                            status=400, mimetype="text/html")
        decision = params.get("decision") if request.method == "POST" else None
        if request.method == "GET" and self.oauth_auto_approve:
            decision = "deny" if self.oauth_auto_approve == "deny" else "approve"
        if decision is None:
            return Response(control.consent_page(self, params, action=request.path),
                            mimetype="text/html")
        if decision == "approve":
            account = params.get("account") or self.oauth_next_account
            if not account or account not in self.state.accounts or account == PLATFORM:
                account = self.state.create_account(livemode=livemode)
            query = {"code": self.apps.new_code(account, livemode)}
        else:
            query = {"error": "access_denied", "error_description": "The user denied your request"}
        if params.get("state") is not None:
            query["state"] = params["state"]
        sep = "&" if "?" in redirect_uri else "?"
        return Response(status=302, headers={"Location": redirect_uri + sep + urlencode(query)})

    def _app_token(self, request: Request) -> Response:
        """``POST /v1/oauth/token`` with our own secret key of the install's mode."""
        key = self._platform_key(request)
        if not key or key not in (self.secret_key, self.test_secret_key):
            return self._json(*O.error(401, "invalid_request_error",
                                       f"Invalid API Key provided: {(key or '')[:8]}****"))
        livemode = key == self.secret_key and key != self.test_secret_key
        return self._json(*self.apps.exchange(livemode, request.form))

    def install_app(self, account: str, livemode: bool = False,
                    permissions: set[str] | None = None) -> dict:
        """An App install completed and its code exchanged: the token response."""
        return self.apps.install(account, livemode, permissions)

    def uninstall_app(self, account: str, livemode: bool = False) -> dict | None:
        """The tenant uninstalls the App in Stripe's Dashboard: tokens die, event sent."""
        if not self.apps.uninstall(account, livemode):
            return None
        return self.state.emit(account, "account.application.deauthorized",
                               {"id": self.apps.client_id(livemode), "object": "application",
                                "name": "CrowdPower"}, livemode=livemode)

    def _deauthorize(self, request: Request) -> Response:
        if self._platform_key(request) != self.secret_key:
            return self._oauth_error(401, "invalid_client", "Invalid client secret.")
        account = request.form.get("stripe_user_id", "")
        acct = self.state.accounts.get(account)
        if request.form.get("client_id") != self.client_id or acct is None \
                or not acct.connected:
            return self._oauth_error(401, "invalid_client", "This application is not "
                                     f"connected to stripe account {account}, or that "
                                     "account does not exist.")
        for token, owner in list(self.tokens.items()):
            if owner == account:
                del self.tokens[token]
        self.state.deauthorize(account, self.client_id)
        return self._json(200, {"stripe_user_id": account})


_STATE_METHODS = {"create_customer", "update_customer", "delete_customer", "create_product",
                  "create_price", "create_subscription", "update_subscription",
                  "cancel_subscription", "trial_will_end", "invoice_upcoming", "create_charge",
                  "refund_charge", "deauthorize", "emit", "capture_charge", "dispute_charge",
                  "create_coupon"}


class MissingParam(ValueError):
    """A required parameter is absent (Stripe answers 400 ``parameter_missing``)."""


def _bearer(request: Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[7:]
    return request.authorization.username if request.authorization else None


def _required(params: dict, name: str) -> Any:
    if params.get(name) in (None, ""):
        raise MissingParam(name)
    return params[name]


def _created_filter(params: dict) -> Any:
    created = params.get("created")
    if created is None:
        return None
    if not isinstance(created, dict):
        value = int(created)
        return lambda c: c.get("created") == value
    bounds = {op: int(v) for op, v in created.items()}

    def ok(core: dict) -> bool:
        t = core.get("created") or 0
        return (("gt" not in bounds or t > bounds["gt"]) and
                ("gte" not in bounds or t >= bounds["gte"]) and
                ("lt" not in bounds or t < bounds["lt"]) and
                ("lte" not in bounds or t <= bounds["lte"]))
    return ok


def _filter(kind: str, params: dict) -> Any:
    """The keep-predicate of a list call (Stripe's list filters for that kind)."""
    checks = []
    created = _created_filter(params)
    if created:
        checks.append(created)
    if kind == "customer":
        checks.append(lambda c: not c.get("deleted"))
        if params.get("email"):
            email = params["email"]
            checks.append(lambda c: c.get("email") == email)
    if kind == "subscription":
        status = params.get("status")
        if status is None:
            checks.append(lambda c: c["status"] not in ("canceled", "incomplete_expired"))
        elif status == "ended":
            checks.append(lambda c: c["status"] in ("canceled", "incomplete_expired"))
        elif status != "all":
            checks.append(lambda c: c["status"] == status)
        if params.get("price"):
            price = params["price"]
            checks.append(lambda c: any(i["price"] == price for i in c["items"]))
    if kind == "event" and params.get("type"):
        type_ = params["type"]
        if type_.endswith("*"):
            checks.append(lambda c: c["type"].startswith(type_[:-1]))
        else:
            checks.append(lambda c: c["type"] == type_)
    if not checks:
        return lambda c: True
    return lambda c: all(check(c) for check in checks)
