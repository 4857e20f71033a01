"""The adversarial suite: hostile input and faults (issue 14).

Reuses the automations fixtures (loopback SMTP server, webhook receiver, helpers).
"""

from tests.automations.conftest import (  # noqa: F401
    automation_config,
    other_project,
    project,
    smtp,
    smtp_server,
    webhook,
)
