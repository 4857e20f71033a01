"""Ready-made automations for the derived lifecycle events (see ``lifecycle.py``).

Offered next to the billing ones in ``automation_templates.py``; each renders for a
customer without traits (``or`` fallbacks) and uses only the documented properties.
"""

from __future__ import annotations

from crowdpower.plugins.stripe import lifecycle
from crowdpower.plugins.stripe.automation_templates import (
    _GREETING_HTML,
    _GREETING_TEXT,
    _SIGN_OFF_HTML,
    _SIGN_OFF_TEXT,
)

_MRR_AFTER = "{{ event.properties.mrr_after|money(event.properties.currency) }}"


def _email(key: str, name: str, description: str, trigger: str, subject: str, body: str,
           delay: int = 0, conditions: dict | None = None,
           conversion_event: str | None = None) -> dict:
    return {"key": key, "name": name, "description": description, "trigger": trigger,
            "conditions": conditions or {}, "delay_seconds": delay, "action": "email",
            "subject": subject, "conversion_event": conversion_event,
            "html": _GREETING_HTML + f"<p>{body}</p>" + _SIGN_OFF_HTML,
            "text": _GREETING_TEXT + f"\n\n{body}\n\n" + _SIGN_OFF_TEXT}


LIFECYCLE_TEMPLATES: list[dict] = [
    _email("stripe_trial_converted", "Welcome aboard (trial converted)",
           "Thank a customer whose trial just became a paid subscription.",
           lifecycle.TRIAL_CONVERTED, "Welcome aboard!",
           "Thanks for choosing {{ event.properties.plan_after or 'us' }} — your "
           "subscription is now active."),
    _email("stripe_upgraded", "Thanks for upgrading",
           "Confirm an upgrade and point to what the new plan unlocks.",
           lifecycle.UPGRADED, "You're on {{ event.properties.plan_after or 'a new plan' }}",
           "Your plan is now {{ event.properties.plan_after or 'upgraded' }} ("
           + _MRR_AFTER + " a month). Enjoy the extra room!"),
    _email("stripe_downgraded", "Downgrade feedback",
           "Ask a customer who downgraded what was missing.",
           lifecycle.DOWNGRADED, "Quick question about your plan change",
           "We noticed you moved to {{ event.properties.plan_after or 'a smaller plan' }}. "
           "Was something missing? Just reply — we read every answer.", delay=3600),
    _email("stripe_churn_win_back", "Win back a churned customer",
           "Three days after a customer's last subscription ended, invite them back "
           "(credited when they reactivate within 30 days).",
           lifecycle.CHURNED, "We'd love to have you back",
           "Your {{ event.properties.plan_before or '' }} subscription has ended. Come "
           "back any time — your account is still here.", delay=3 * 24 * 3600,
           conditions={"traits": {"all": [{"trait": "stripe_subscription_status",
                                           "op": "not_in",
                                           "value": ["active", "trialing", "past_due"]}]}},
           conversion_event=lifecycle.REACTIVATED),
    _email("stripe_reactivated", "Welcome back",
           "Greet a customer who came back or undid a cancellation.",
           lifecycle.REACTIVATED, "Welcome back!",
           "Good to have you back on {{ event.properties.plan_after or 'your plan' }}."),
    _email("stripe_payment_recovered", "Payment received after a failure",
           "Confirm that a failed payment went through after all.",
           lifecycle.PAYMENT_RECOVERED, "Thanks — your payment went through",
           "We received your payment of "
           "{{ event.properties.amount|money(event.properties.currency) }}. "
           "Your subscription continues as before."),
]
for _template in LIFECYCLE_TEMPLATES:
    _template["attribution_window_hours"] = 30 * 24 if _template["conversion_event"] else 168
