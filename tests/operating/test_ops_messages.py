"""``crowdpower ops messages list|resend|drop``: one project's failed messages, mended
through the real CLI group, the real send job (an RQ worker in PostgreSQL mode) and a
real SMTP server on loopback; another project's ids are refused and left alone."""

from __future__ import annotations

import json
import logging

from tests.automations.conftest import (  # noqa: F401  (fixtures)
    automation_config,
    create_automation,
    customer,
    event,
    messages,
    other_project,
    project,
    smtp,
    smtp_server,
)
from tests.operating.test_ops import run  # noqa: F401  (fixture)


def _states(client, key: str) -> dict[int, tuple[str, int]]:
    return {m["id"]: (m["state"], m["attempts"]) for m in messages(client, key)}


def test_failed_messages_are_resent_and_dropped_for_one_project_only(
        project, other_project, client, smtp, drain, run, caplog):  # noqa: F811
    pid, key = project
    oid, okey = other_project
    smtp.always_reject = "550 5.1.1 No such user here"  # every message fails for good
    create_automation(client, key)
    create_automation(client, okey)
    event(pid, customer(pid, "ann@example.com"))
    event(pid, customer(pid, "bo@example.com"))
    event(oid, customer(oid, "cy@example.com"))
    drain()
    ours, theirs = _states(client, key), _states(client, okey)
    assert sorted(ours.values()) == [("failed", 1)] * 2 and list(theirs.values()) == [("failed", 1)]
    [first, second], [their_id] = sorted(ours), list(theirs)

    listed = json.loads(run("ops", "messages", "list", "--project", str(pid)).output)
    assert [m["id"] for m in listed] == [second, first]
    assert {m["to"] for m in listed} == {"ann@example.com", "bo@example.com"}
    assert "550" in listed[0]["error"]

    # another project's message id: a clear error, and nothing changes anywhere
    for action in ("resend", "drop"):
        result = run("ops", "messages", action, "--project", str(pid), "--id", str(their_id))
        assert result.exit_code == 2, result.output
        assert f"no failed message {their_id} in project {pid}" in result.output
        result = run("ops", "messages", action, "--project", str(pid), "--id", str(first),
                     "--id", str(their_id))  # one good id does not carry a bad one through
        assert result.exit_code == 2, result.output
    drain()
    assert _states(client, key) == ours and _states(client, okey) == theirs
    assert smtp.accepted == []

    smtp.always_reject = None  # the mailbox exists again
    with caplog.at_level(logging.INFO, logger="crowdpower.ops"):
        out = json.loads(run("ops", "messages", "resend", "--project", str(pid),
                             "--id", str(first)).output)
    assert out == {"resent": [first]}
    drain()
    assert _states(client, key) == {first: ("sent", 1), second: ("failed", 1)}
    assert _states(client, okey) == theirs
    assert [m["To"] for m in smtp.accepted] == ["Ann Lee <ann@example.com>"]

    with caplog.at_level(logging.INFO, logger="crowdpower.ops"):
        out = json.loads(run("ops", "messages", "drop", "--project", str(pid)).output)
    assert out == {"dropped": [second]}
    drain()
    assert _states(client, key) == {first: ("sent", 1), second: ("skipped", 1)}
    assert _states(client, okey) == theirs and len(smtp.accepted) == 1
    assert json.loads(run("ops", "messages", "resend", "--project", str(pid)).output) \
        == {"resent": []}

    audits = [r for r in caplog.records if r.name == "crowdpower.ops"]
    assert [r.ops_action for r in audits] == ["messages.resend", "messages.drop",
                                              "messages.resend"]
    assert f"project={pid} " in audits[0].getMessage()
    assert json.dumps({"ids": [first]}) in audits[0].getMessage()
    assert json.dumps({"ids": [second]}) in audits[1].getMessage()
    assert all(r.operator for r in audits)


def test_an_audit_lines_project_field_is_the_project_acted_on(app):
    """An operator's shell is in no tenant's scope: the JSON line still names the project."""
    import io

    from crowdpower import logs
    from crowdpower.ops import audit

    stream = io.StringIO()
    handler = logs.make_handler(stream, fmt="json")
    ops_log = logging.getLogger("crowdpower.ops")
    ops_log.addHandler(handler)
    try:
        audit("messages.drop", 42, ids=[1])
    finally:
        ops_log.removeHandler(handler)
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert (line["project_id"], line["ops_action"]) == (42, "messages.drop")
