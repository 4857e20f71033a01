"""Host features built as plugins of the host itself (they use the same hooks)."""

from crowdpower.automations import plugin as automations
from crowdpower.revenue import plugin as revenue

PLUGINS: list = [automations, revenue]
