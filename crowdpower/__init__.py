"""CrowdPower: multi-tenant customer messaging, extended by plugins."""

from crowdpower.app import create_app

__all__ = ["create_app"]
