"""A loopback Stripe for tests, the demo and benchmarks (see ``server.StripeDouble``).

Stripe cannot be reached from our machines and no existing fake speaks current API
shapes with Connect, so this double implements, at the HTTP boundary, the part of
Stripe that CrowdPower uses: the REST API for customers, prices, subscriptions,
charges and events (per connected account, by ``Stripe-Account``), Connect OAuth,
signed Connect webhooks, and faults on demand.
"""

from crowdpower_stripe_double.server import StripeDouble
from crowdpower_stripe_double.webhooks import sign

__all__ = ["StripeDouble", "sign"]
