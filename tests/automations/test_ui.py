"""Web UI: the automations page, suggestions in two clicks, the form, settings, 404s, CSRF."""

from __future__ import annotations

import html
import re

from crowdpower.automations.validation import clean
from crowdpower.plugins.stripe.automation_templates import STRIPE_TEMPLATES
from tests.automations.conftest import create_automation, customer, event, messages
from tests.conftest import api, csrf_from


def _form(page: str) -> dict:
    """The values a browser would post from the automation form as rendered."""
    text = lambda n: html.unescape(re.search(  # noqa: E731
        rf'<textarea id="{n}" name="{n}"[^>]*>(.*?)</textarea>', page, re.S).group(1))
    value = lambda n: html.unescape(re.search(  # noqa: E731
        rf'id="{n}" name="{n}"[^>]*? value="([^"]*)"', page).group(1))
    data = {"csrf_token": csrf_from(page), "name": value("name"), "trigger": html.unescape(re.search(
                r'<select id="trigger".*?<option selected[^>]*>([^<]*)</option>', page,
                re.S).group(1)),
            "subject": value("subject"), "webhook_url": value("webhook_url"),
            "html": text("html"), "text": text("text"), "webhook_body": text("webhook_body"),
            "conditions_event": text("conditions_event"),
            "conditions_traits": text("conditions_traits"),
            "delay_value": value("delay_value"), "segment_id": "",
            "action": re.search(r'name="action" value="(\w+)"[^>]*checked', page).group(1),
            "delay_unit": re.search(r'<select name="delay_unit">.*?<option selected>(\w+)</option>',
                                     page, re.S).group(1)}
    template = re.search(r'name="template" value="([^"]+)"', page)
    if template:
        data["template"] = template.group(1)
    if re.search(r'name="enabled"[^>]*checked', page):
        data["enabled"] = "on"
    return data


def test_use_a_suggestion_in_two_clicks(tenant, client):
    pid, key, c = tenant
    index = c.get(f"/projects/{pid}/automations").get_data(as_text=True)
    assert f'href="/projects/{pid}/automations"' in index  # the nav link
    for template in STRIPE_TEMPLATES:
        assert html.escape(template["name"]) in index
    use = re.search(r'href="([^"]*template=stripe_win_back)"', index).group(1)
    form = c.get(html.unescape(use))                                   # click 1: "Use"
    assert form.status_code == 200
    saved = c.post(f"/projects/{pid}/automations/new", data=_form(form.get_data(as_text=True)))
    assert saved.status_code == 302, saved.get_data(as_text=True)      # click 2: "Save"
    [automation] = api(client, key).get("/api/v1/automations").json["data"]
    win_back = next(t for t in STRIPE_TEMPLATES if t["key"] == "stripe_win_back")
    assert automation["enabled"] is True and automation["template_key"] == "stripe_win_back"
    for field in ("name", "trigger", "conditions", "delay_seconds", "subject", "html", "text"):
        assert automation[field] == win_back[field], field
    assert c.get(f"/projects/{pid}/automations/new?template=nope").status_code == 404


def test_edit_toggle_and_form_errors(tenant, client):
    pid, key, c = tenant
    automation = create_automation(client, key)
    url = f"/projects/{pid}/automations/{automation['id']}"
    data = _form(c.get(url).get_data(as_text=True))
    assert data["subject"] == automation["subject"]
    escaped = c.post(url, data={**data, "html": "{{ ''.__class__.__mro__ }}"})
    assert escaped.status_code == 400
    assert "access to attribute &#39;__class__&#39;" in escaped.get_data(as_text=True)
    broken = c.post(url, data={**data, "conditions_traits": "{not json"})
    assert broken.status_code == 400 and "not valid JSON" in broken.get_data(as_text=True)
    ok = c.post(url, data={**data, "name": "Renamed", "delay_value": "2", "delay_unit": "hours",
                           "conditions_traits": '{"all": [{"trait": "plan", "op": "eq", '
                                                '"value": "pro"}]}'})
    assert ok.status_code == 302
    after = api(client, key).get(f"/api/v1/automations/{automation['id']}").json
    assert (after["name"], after["delay_seconds"]) == ("Renamed", 7200)
    assert after["conditions"]["traits"]["all"][0]["value"] == "pro"
    assert after["html"] == automation["html"]
    toggle = f"{url}/toggle"
    assert c.post(toggle).status_code == 400  # no CSRF token
    assert c.post(toggle, data={"csrf_token": data["csrf_token"]}).status_code == 302
    assert api(client, key).get(f"/api/v1/automations/{automation['id']}").json[
        "enabled"] is False


def test_csrf_is_required_on_forms(tenant):
    pid, _key, c = tenant
    page = c.get(f"/projects/{pid}/automations/new").get_data(as_text=True)
    data = _form(page)
    data.update(name="X", trigger="Signed Up", subject="Hi", text="Hello")
    from crowdpower.extensions import db
    from crowdpower.models import EventDefinition

    db.session.add(EventDefinition(project_id=pid, name="Signed Up"))  # a known event
    db.session.commit()
    without = {k: v for k, v in data.items() if k != "csrf_token"}
    assert c.post(f"/projects/{pid}/automations/new", data=without).status_code == 400
    assert c.post(f"/projects/{pid}/automations/settings",
                  data={"frequency_cap_hours": "3"}).status_code == 400
    assert c.post(f"/projects/{pid}/automations/new", data=data).status_code == 302


def test_settings_form(tenant, client):
    pid, key, c = tenant
    token = csrf_from(c.get(f"/projects/{pid}/automations").get_data(as_text=True))
    url = f"/projects/{pid}/automations/settings"
    assert c.post(url, data={"csrf_token": token, "frequency_cap_hours": "12"}).status_code == 302
    assert api(client, key).get("/api/v1/automation-settings").json == {"frequency_cap_hours": 12}
    assert 'value="12"' in c.get(f"/projects/{pid}/automations").get_data(as_text=True)
    c.post(url, data={"csrf_token": token, "frequency_cap_hours": "abc"})
    assert api(client, key).get("/api/v1/automation-settings").json == {"frequency_cap_hours": 12}
    c.post(url, data={"csrf_token": token, "frequency_cap_hours": ""})
    assert api(client, key).get("/api/v1/automation-settings").json == {
        "frequency_cap_hours": None}


def test_other_project_pages_are_404(tenant, other_tenant, client, smtp, drain):
    pid, key, c = tenant
    automation = create_automation(client, key)
    event(pid, customer(pid))
    drain()
    [message] = messages(client, key)
    _opid, _okey, oc = other_tenant
    token = csrf_from(oc.get(f"/projects/{_opid}/automations").get_data(as_text=True))
    base = f"/projects/{pid}/automations"
    for url in (base, f"{base}/new", f"{base}/{automation['id']}", f"{base}/messages",
                f"{base}/messages/{message['id']}"):
        assert oc.get(url).status_code == 404, url
        assert c.get(url).status_code == 200, url
    own = f"/projects/{_opid}/automations"
    for url in (f"{own}/{automation['id']}", f"{own}/messages/{message['id']}",
                f"{own}/messages?automation={automation['id']}"):
        assert oc.get(url).status_code == 404, url
    assert oc.post(f"{own}/{automation['id']}/toggle",
                   data={"csrf_token": token}).status_code == 404
    assert oc.post(f"{base}/{automation['id']}/toggle",
                   data={"csrf_token": token}).status_code == 404
    assert api(client, key).get(f"/api/v1/automations/{automation['id']}").json["enabled"]


def test_unsubscribe_page_rejects_bad_tokens(client):
    assert client.get("/u/not-a-token").status_code == 404
    assert client.post("/u/not-a-token").status_code == 404


def test_stripe_templates_are_valid(project):
    pid, _key = project
    for template in STRIPE_TEMPLATES:
        fields = {f: template[f] for f in ("trigger", "conditions", "delay_seconds", "action",
                                           "subject", "html", "text")}
        assert clean({"name": template["name"], **fields}, pid)["trigger"].startswith("Stripe ")


def test_the_form_sets_the_conversion_event_and_window(tenant, client):
    pid, key, c = tenant
    automation = create_automation(client, key)
    url = f"/projects/{pid}/automations/{automation['id']}"
    page = c.get(url).get_data(as_text=True)
    assert 'name="conversion_event"' in page and "automation-stats" in page
    data = _form(page)
    ok = c.post(url, data={**data, "conversion_event": " Stripe Trial Converted ",
                           "attribution_window_hours": "48"})
    assert ok.status_code == 302
    after = api(client, key).get(f"/api/v1/automations/{automation['id']}").json
    assert (after["conversion_event"], after["attribution_window_hours"]) == (
        "Stripe Trial Converted", 48)
    bad = c.post(url, data={**data, "conversion_event": "", "attribution_window_hours": "0"})
    assert bad.status_code == 400 and 'data-field="attribution_window_hours"' in \
        bad.get_data(as_text=True)
    cleared = c.post(url, data={**data, "conversion_event": "",
                                "attribution_window_hours": "168"})
    assert cleared.status_code == 302
    assert api(client, key).get(f"/api/v1/automations/{automation['id']}").json[
        "conversion_event"] is None
