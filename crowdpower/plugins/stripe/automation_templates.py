"""Suggested Stripe automations, as plain data for ``crowdpower_automation_templates``.

The Stripe plugin returns ``STRIPE_TEMPLATES`` from its hookimpl (for projects with Stripe
enabled); the automations page
offers each with "Use this template". Templates must render for customers lacking
traits (``or`` fallbacks), since a render error fails the message.
"""

from __future__ import annotations

_SIGN_OFF_HTML = "<p>Thanks,<br>The team</p>"
_SIGN_OFF_TEXT = "Thanks,\nThe team"
_GREETING_HTML = "<p>Hi {{ customer.name or 'there' }},</p>"
_GREETING_TEXT = "Hi {{ customer.name or 'there' }},"

STRIPE_TEMPLATES: list[dict] = [
    {
        "key": "stripe_dunning",
        "name": "Payment failed (dunning)",
        "description": "Tell the customer their payment failed, with the amount and the "
                       "bank's reason, and ask them to update their card.",
        "trigger": "Stripe Charge Failed",
        "conditions": {},
        "delay_seconds": 0,
        "action": "email",
        "subject": "Your payment of "
                   "{{ event.properties.amount|money(event.properties.currency) }} failed",
        "html": _GREETING_HTML
        + "<p>We couldn't process your payment of "
          "<strong>{{ event.properties.amount|money(event.properties.currency) }}</strong>."
          "{% if event.properties.failure_message %} The bank said: "
          "“{{ event.properties.failure_message }}”{% endif %}</p>"
          "<p>Please update your payment method so your subscription stays active.</p>"
        + _SIGN_OFF_HTML,
        "text": _GREETING_TEXT
        + "\n\nWe couldn't process your payment of "
          "{{ event.properties.amount|money(event.properties.currency) }}."
          "{% if event.properties.failure_message %} The bank said: "
          "\"{{ event.properties.failure_message }}\"{% endif %}\n\n"
          "Please update your payment method so your subscription stays active.\n\n"
        + _SIGN_OFF_TEXT,
    },
    {
        "key": "stripe_trial_ending",
        "name": "Trial ending soon",
        "description": "Remind a trialing customer that their trial ends in a few days.",
        "trigger": "Stripe Subscription Trial Will End",
        "conditions": {},
        "delay_seconds": 0,
        "action": "email",
        "subject": "Your trial ends "
                   "{% if customer.traits.stripe_trial_end_at %}on "
                   "{{ customer.traits.stripe_trial_end_at[:10] }}{% else %}soon{% endif %}",
        "html": _GREETING_HTML
        + "<p>Your {{ customer.traits.stripe_plan_name or '' }} trial ends "
          "{% if customer.traits.stripe_trial_end_at %}on "
          "{{ customer.traits.stripe_trial_end_at[:10] }}{% else %}soon{% endif %}. "
          "Add a payment method to keep going without interruption.</p>"
        + _SIGN_OFF_HTML,
        "text": _GREETING_TEXT
        + "\n\nYour {{ customer.traits.stripe_plan_name or '' }} trial ends "
          "{% if customer.traits.stripe_trial_end_at %}on "
          "{{ customer.traits.stripe_trial_end_at[:10] }}{% else %}soon{% endif %}. "
          "Add a payment method to keep going without interruption.\n\n"
        + _SIGN_OFF_TEXT,
    },
    {
        "key": "stripe_upcoming_renewal",
        "name": "Upcoming renewal",
        "description": "Give notice of the next invoice before the subscription renews.",
        "trigger": "Stripe Invoice Upcoming",
        "conditions": {},
        "delay_seconds": 0,
        "action": "email",
        "subject": "Your subscription renews soon",
        "html": _GREETING_HTML
        + "<p>Your {{ customer.traits.stripe_plan_name or 'subscription' }} renews soon; "
          "we'll charge "
          "<strong>{{ event.properties.amount_due|money(event.properties.currency) }}</strong>"
          " to your payment method on file.</p>"
        + _SIGN_OFF_HTML,
        "text": _GREETING_TEXT
        + "\n\nYour {{ customer.traits.stripe_plan_name or 'subscription' }} renews soon; "
          "we'll charge {{ event.properties.amount_due|money(event.properties.currency) }} "
          "to your payment method on file.\n\n"
        + _SIGN_OFF_TEXT,
    },
    {
        "key": "stripe_win_back",
        "name": "Win-back after cancellation",
        "description": "A week after a subscription ends, invite the customer back — unless "
                       "they have resubscribed in the meantime.",
        "trigger": "Stripe Subscription Deleted",
        "conditions": {"traits": {"all": [{"trait": "stripe_subscription_status",
                                           "op": "not_in",
                                           "value": ["active", "trialing", "past_due"]}]}},
        "delay_seconds": 7 * 24 * 3600,
        "action": "email",
        "subject": "We'd love to have you back",
        "html": _GREETING_HTML
        + "<p>Your {{ customer.traits.stripe_plan_name or '' }} subscription has ended. "
          "We've been improving things since — come back any time, your account is "
          "still here.</p>"
        + _SIGN_OFF_HTML,
        "text": _GREETING_TEXT
        + "\n\nYour {{ customer.traits.stripe_plan_name or '' }} subscription has ended. "
          "We've been improving things since — come back any time, your account is "
          "still here.\n\n"
        + _SIGN_OFF_TEXT,
    },
]
