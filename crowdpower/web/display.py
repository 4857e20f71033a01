"""HTML for formatted values (see ``crowdpower.formatting``): times carry the exact value
on hover, lists become chips, statuses become pills coloured by meaning."""

from __future__ import annotations

from typing import Any

from markupsafe import Markup, escape

from crowdpower.formatting import Shown, format_trait, format_value

# Status words by meaning (subscriptions, charges, syncs, messages, connections).
GOOD = {"active", "succeeded", "sent", "connected", "paid", "trialing", "won", "enabled"}
BAD = {"past_due", "unpaid", "failed", "canceled", "incomplete_expired", "lost", "error",
       "reconnect_needed", "disconnected", "disabled"}
WAITING = {"pending", "running", "incomplete", "paused", "outbox", "skipped", "trial",
           "queued", "warning_needs_response", "needs_response", "under_review"}


def html(shown: Shown) -> Markup:
    if shown.kind == "empty":
        return Markup('<span class="muted">—</span>')
    if shown.kind == "datetime":
        return Markup('<time datetime="{0}" title="{0}">{1}</time>').format(shown.exact,
                                                                            shown.text)
    if shown.kind == "list":
        return Markup(" ").join(Markup('<span class="chip">{}</span>').format(i)
                                for i in shown.items)
    if shown.kind == "code":
        return Markup("<code>{}</code>").format(shown.text)
    if shown.exact:
        return Markup('<span title="{}">{}</span>').format(shown.exact, shown.text)
    return Markup(escape(shown.text))


def shown(value: Any, fmt: str | None = None, currency: str | None = None) -> Markup:
    return html(format_value(value, fmt, currency))


def trait_shown(key: str, traits: dict, specs: dict) -> Markup:
    return html(format_trait(key, traits, specs))


def status_kind(status: str | None) -> str:
    word = (status or "").lower().replace(" ", "_")
    if word in GOOD:
        return "ok"
    if word in BAD:
        return "bad"
    if word in WAITING:
        return "wait"
    return ""


def status_pill(status: str | None) -> Markup:
    if not status:
        return Markup("")
    return Markup('<span class="pill {}" data-status="{}">{}</span>').format(
        status_kind(status), status, str(status).replace("_", " "))
