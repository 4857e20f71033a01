"""The double's CrowdPower plugin (entry point ``crowdpower.plugins: stripe_double``): it
adds ``crowdpower demo`` and ``crowdpower stripe-double``, both run in development mode."""

from __future__ import annotations

from crowdpower.plugins import hookimpl


@hookimpl
def crowdpower_cli_commands():
    from crowdpower_stripe_double.cli import stripe_double  # click loads lazily, at CLI time
    from crowdpower_stripe_double.demo import demo

    return [demo, stripe_double]


@hookimpl
def crowdpower_dev_commands():
    return ["demo", "stripe-double"]
