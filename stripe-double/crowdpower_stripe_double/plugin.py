"""The double's CrowdPower plugin (entry point ``crowdpower.plugins: stripe_double``): it
adds ``crowdpower demo`` and ``crowdpower stripe-double``, both run in development mode."""

from __future__ import annotations

from crowdpower.plugins import hookimpl

from crowdpower_stripe_double.cli import stripe_double
from crowdpower_stripe_double.demo import demo


@hookimpl
def crowdpower_cli_commands():
    return [demo, stripe_double]


@hookimpl
def crowdpower_dev_commands():
    return ["demo", "stripe-double"]
