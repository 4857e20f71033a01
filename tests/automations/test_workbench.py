"""The automation editor: known triggers only, every error at once, suggestions in use,
preview for a chosen customer and event, test send to the member, delete with confirm."""

from __future__ import annotations

import html
import re

from crowdpower.customers import record_event, upsert_customer
from crowdpower.extensions import db
from crowdpower.tenancy import project_scope
from tests.automations.conftest import create_automation
from tests.automations.test_ui import _form
from tests.conftest import csrf_from


def test_unknown_trigger_is_refused_with_every_other_error_at_once(tenant):
    pid, _key, c = tenant
    page = c.get(f"/projects/{pid}/automations/new").get_data(as_text=True)
    data = _form(page)
    data.update(name="", trigger="Stripe Charge Faild", subject="{{ oops", text="x",
                conditions_traits="{not json", delay_value="soon")
    response = c.post(f"/projects/{pid}/automations/new", data=data)
    body = html.unescape(response.get_data(as_text=True))
    assert response.status_code == 400
    assert "“Stripe Charge Faild” is not an event of this project" in body
    shown = set(re.findall(r'class="error" data-field="(\w+)"', body))
    assert shown >= {"trigger", "name", "subject", "conditions", "delay_seconds"}, shown


def test_suggestion_in_use_is_marked(tenant, client):
    pid, key, c = tenant
    index = c.get(f"/projects/{pid}/automations").get_data(as_text=True)
    assert "in use" not in index
    use = re.search(r'href="([^"]*template=([\w]+))"', index)
    form = c.get(html.unescape(use.group(1))).get_data(as_text=True)
    assert c.post(f"/projects/{pid}/automations/new", data=_form(form)).status_code == 302
    index = c.get(f"/projects/{pid}/automations").get_data(as_text=True)
    assert index.count('class="pill ok in-use">in use') == 1


def _customer_with_event(pid: int, trigger: str) -> tuple[int, int]:
    with project_scope(pid):
        customer, _created = upsert_customer(pid, email="ann@example.com", name="Ann")
        db.session.flush()
        event = record_event(pid, customer.id, trigger, {"amount": 29.0, "currency": "usd",
                                                         "failure_message": "Card declined."})
        db.session.commit()
        return customer.id, event.id


def test_preview_renders_for_a_chosen_customer_and_test_send_goes_to_the_member(
        tenant, other_tenant, client, smtp):
    pid, key, c = tenant
    automation = create_automation(client, key, subject="Hi {{ customer.name }}",
                                   text="{{ event.properties.failure_message }}")
    _cid, event_id = _customer_with_event(pid, automation["trigger"])
    url = f"/projects/{pid}/automations/{automation['id']}/preview"
    page = c.get(url, query_string={"email": "ann@example.com"}).get_data(as_text=True)
    assert '<span class="preview-subject">Hi Ann</span>' in page
    assert "Card declined." in page and f'value="{event_id}" selected' in page
    assert "No customer of this project" in c.get(
        url, query_string={"email": "nobody@example.com"}).get_data(as_text=True)
    other_pid, _okey, oc = other_tenant
    assert oc.get(url).status_code == 404
    sent = c.post(f"/projects/{pid}/automations/{automation['id']}/test-send",
                  data={"csrf_token": csrf_from(page), "event_id": event_id,
                        "customer_id": _cid}, follow_redirects=True)
    assert "Test email sent to" in sent.get_data(as_text=True)
    [mail] = [m for m in smtp.accepted if m["Subject"].startswith("[Test]")]
    assert mail["Subject"] == "[Test] Hi Ann" and "ann@example.com" not in mail["To"]
    assert mail["To"] == page_user(page)


def page_user(page: str) -> str:
    """The logged-in member's email, as the header shows it."""
    return re.search(r'<span class="muted">([^<@]+@[^<]+)</span>', page).group(1)


def test_delete_needs_confirmation_and_is_scoped(tenant, other_tenant, client):
    pid, key, c = tenant
    automation = create_automation(client, key)
    url = f"/projects/{pid}/automations/{automation['id']}/delete"
    page = c.get(f"/projects/{pid}/automations/{automation['id']}").get_data(as_text=True)
    assert "return confirm(" in page and url in page
    token = csrf_from(page)
    assert c.post(url, data={"csrf_token": token}).status_code == 400  # not confirmed
    _opid, _okey, oc = other_tenant
    other_token = csrf_from(oc.get("/login").get_data(as_text=True))
    assert oc.post(url, data={"csrf_token": other_token, "confirm": "yes"}).status_code == 404
    done = c.post(url, data={"csrf_token": token, "confirm": "yes"}, follow_redirects=True)
    assert "deleted" in done.get_data(as_text=True)
    assert c.get(f"/projects/{pid}/automations/{automation['id']}").status_code == 404
