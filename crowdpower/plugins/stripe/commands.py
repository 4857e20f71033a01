"""CLI commands the plugin adds: ``crowdpower demo`` and ``crowdpower stripe-double``
(both come with the Stripe double)."""

from __future__ import annotations

from crowdpower.plugins.stripe.double.cli import stripe_double
from crowdpower.plugins.stripe.double.demo import demo

COMMANDS = [demo, stripe_double]
