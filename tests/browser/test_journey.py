"""The demo journey in a real browser, as a new tenant walks it; every page visited is
checked again at phone width for horizontal overflow."""

from __future__ import annotations

import json
import re
import time

from crowdpower.plugins.stripe.sync import PHASES
from tests.browser.conftest import WIDTHS, page_width_overflow, save_readme_screenshot

MONEY = r"(?:(?:[$€£¥]|[A-Z]{1,2}\$)[\d,]+(?:\.\d\d)?|[\d,]+\.\d\d [A-Z]{3})"


def login(page, served) -> None:
    page.goto(served.base_url + "/login")
    page.fill("#email", served.email)
    page.fill("#password", served.password)
    page.click("button:has-text('Log in')")
    page.wait_for_url(re.compile(r"/projects/"))


class Widths:
    """Checks each page of the journey at desktop width, and right away (while the page
    still exists as the journey left it) at phone width in a second, logged-in tab."""

    def __init__(self, browser, page) -> None:
        self.context = browser.new_context(viewport={"width": WIDTHS["phone"], "height": 800},
                                           storage_state=page.context.storage_state())
        self.phone = self.context.new_page()
        self.seen: list[str] = []

    def check(self, page, name: str | None = None) -> None:
        """``name``: check the URL again even if seen (the page changed), and keep the
        phone screenshot as ``phone-<name>.png``."""
        overflow = page_width_overflow(page)
        assert overflow <= 0, f"{page.url} is {overflow}px wider than the viewport"
        if page.url in self.seen and name is None:
            return
        if page.url not in self.seen:
            self.seen.append(page.url)
        self.phone.goto(page.url)
        save_readme_screenshot(self.phone, f"phone-{name or f'{len(self.seen):02d}'}.png",
                               full_page=True, readme=False)
        overflow = page_width_overflow(self.phone)
        assert overflow <= 0, f"{page.url} is {overflow}px wider than a phone"


def test_demo_journey(served, page, browser):
    login(page, served)
    widths = Widths(browser, page)

    # Connect: the Stripe App's consent page (the double's), then back on the card.
    page.goto(served.project_url("/integrations"))
    widths.check(page)
    page.click("text=Connect a test-mode account")
    page.wait_for_selector("text=Connect my Stripe account")
    page.click("text=Connect my Stripe account")
    page.wait_for_url(re.compile(r"/integrations"))
    card = page.locator("#integration-stripe")

    # Progress moves through the phases to done, without a reload; Resync waits.
    currents, running_seen = [], False
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        # one snapshot of the card (the page's poll may change it between two reads)
        state, disabled, phase = card.evaluate(
            """c => [c.querySelector('[data-field="state"]').textContent.trim(),
                     c.querySelector('#stripe-resync').disabled,
                     (c.querySelector('li.step.current') || {dataset: {}}).dataset.phase]""")
        if state in ("pending", "running"):
            running_seen = True
            assert disabled, "Resync is clickable while a sync runs"
            if phase and (not currents or currents[-1] != phase):
                currents.append(phase)
        if state in ("succeeded", "failed"):
            break
        time.sleep(0.2)
    assert state == "succeeded", (state, currents)
    assert "ok" in card.locator('[data-field="state"]').get_attribute("class").split()
    steps = card.locator("li.step")
    assert steps.count() == 7 and card.locator("li.step.done").count() == 7, currents
    for phase in ("customers", "subscriptions", "charges", "traits"):
        assert int(card.locator(f'[data-count="{phase}"]').inner_text()) > 0, phase
    assert card.locator('[data-field="bar"]').evaluate("b => b.value === b.max")
    assert not card.locator("#stripe-resync").is_disabled()
    assert currents == sorted(currents, key=PHASES.index), currents  # never backwards
    assert running_seen or currents == []
    page.reload()  # what the server renders agrees with what the page became
    assert card.locator("li.step.done").count() == 7
    assert re.search(r"ago|just now", card.locator('[data-field="last-success"]').inner_text())
    assert "no failures" in card.locator(".webhook-health").inner_text()
    # The account: its id, mode and Dashboard link; the tenant names it (Stripe App tokens
    # cannot read the account's name).
    account = card.locator('[data-field="account"]')
    assert served.account in account.inner_text() and "test mode" in account.inner_text()
    assert account.locator('[data-field="dashboard"]').get_attribute("href") \
        == "https://dashboard.stripe.com/test/dashboard"
    card.locator("text=Name this account").click()
    page.fill("#stripe-label", "Demo Shop (test)")
    page.click("button:has-text('Save name')")
    page.wait_for_selector(".flash:has-text('Demo Shop (test)')")
    assert card.locator(".account-name").inner_text() == "Demo Shop (test)"
    widths.check(page, "card")
    save_readme_screenshot(card, "integration-card.png")

    # Segments with counts, drill down into one.
    page.click("nav >> text=Segments")
    row = page.locator("tr", has_text="Active Stripe Subscribers")
    count = int(re.search(r"\d+", row.locator("td").nth(1).text_content()).group())
    assert count > 0
    widths.check(page)

    # Segment drill-down: the segment's members, as many as its count.
    row.locator("a").first.click()
    page.wait_for_selector(".customer-total")
    assert int(page.locator(".customer-total").inner_text().replace(",", "")) == count
    widths.check(page)

    # Customers list: total, sort by MRR, filter by a trait, pages.
    page.click("nav >> text=Customers")
    total = int(page.locator(".customer-total").inner_text().replace(",", ""))
    api_total = len(served.api("/customers?limit=100").json()["data"])
    assert total == api_total > 50  # the demo has more than one page
    widths.check(page)
    page.select_option('select[name="sort"]', "trait:stripe_mrr")
    page.click("button:has-text('Apply')")
    cells = page.locator('td[data-trait="stripe_mrr"]').all_inner_texts()
    amounts = [float(re.sub(r"[^\d.]", "", c)) for c in cells if re.search(r"\d", c)]
    assert amounts and amounts == sorted(amounts, reverse=True), cells
    page.select_option('select[name="trait"]', "stripe_subscription_status")
    page.select_option('select[name="op"]', "eq")
    page.fill('input[name="value"]', "active")
    page.click("button:has-text('Apply')")
    pills = page.locator('td[data-trait="stripe_subscription_status"] .pill')
    assert pills.count() >= 1 and set(pills.all_inner_texts()) == {"active"}
    assert all("ok" in (p.get_attribute("class") or "").split() for p in pills.all())
    filtered = int(page.locator(".customer-total").inner_text().replace(",", ""))
    assert 0 < filtered < total
    widths.check(page)
    page.goto(served.project_url("/customers"))
    page.click("a[rel=next]")
    assert page.locator("nav.pages [aria-current=page]").inner_text() == "2"
    widths.check(page)

    # A profile of an active subscriber.
    customers = served.api("/customers?limit=100").json()["data"]
    target = next(c for c in customers if c["email"]
                  and c["traits"].get("stripe_subscription_status") == "active")
    page.goto(served.project_url(f"/customers/{target['id']}"))
    stripe_group = page.locator('.trait-group[data-group="Stripe"]')
    assert stripe_group.locator("table.traits th", has_text="MRR").count() == 1  # labels, not keys
    mrr = stripe_group.locator('tr[data-trait="stripe_mrr"] td').inner_text()
    assert re.fullmatch(MONEY, mrr), mrr
    since = stripe_group.locator('tr[data-trait="stripe_created_at"] time')
    assert re.search(r"ago$", since.inner_text()), since.inner_text()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", since.get_attribute("title"))
    assert stripe_group.locator('tr[data-trait="stripe_livemode"] td').inner_text() == "No"
    ids = stripe_group.locator('tr[data-trait="stripe_customer_ids"] .chip')
    assert ids.count() >= 1 and re.fullmatch(r"cus_\w+", ids.first.inner_text())
    subscription = stripe_group.locator(".stripe-panel table").first.locator("tr").nth(1)
    assert "active" in subscription.inner_text()
    link = subscription.locator("a").first.get_attribute("href")
    assert link.startswith("https://dashboard.stripe.com/test/subscriptions/sub_"), link
    widths.check(page)

    # A charge.failed fired at the double lands on the profile and produces a message.
    fired = served.double_simulate("charge_failed", target["email"])
    assert fired.status_code == 200, fired.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        messages = served.api(f"/messages?customer_id={target['id']}").json()["data"]
        if messages:
            break
        time.sleep(0.3)
    assert messages, "the dunning automation sent nothing"
    page.reload()
    sentence = page.locator(".event-sentence").first.inner_text()
    assert re.match(rf"Charge of {MONEY} failed", sentence), sentence
    page.locator(".event details summary").first.click()
    details = page.locator(".event details table").first.inner_text()
    assert "None" not in details and re.search(rf"amount\s+{MONEY}", details), details
    widths.check(page, "profile")
    save_readme_screenshot(page, "profile.png", full_page=True)

    # A webhook event Stripe will not let us apply (its API answers 500) shows on the card
    # as being retried; its link opens the failed-events page, and once Stripe answers
    # again, Retry applies it (attempts start over: 1, not the scheduled retry's 2).
    double = served.double
    double.create_customer(served.account, email="late@demo.test", name="Late Payer",
                           emit=False)
    double.faults.fail_next(served.account, n=500, status=500)
    try:  # Stripe keeps failing (the scheduled retries too) until just before Retry
        fired = served.double_simulate("charge_succeeded", "late@demo.test")
        assert fired.status_code == 200, fired.text
        page.goto(served.project_url("/integrations"))
        health = page.locator(".webhook-health")
        deadline = time.monotonic() + 30
        while "being retried" not in health.inner_text() and time.monotonic() < deadline:
            time.sleep(0.3)
            page.reload()
        assert "being retried" in health.inner_text(), health.inner_text()
        health.locator("a.failed-events-link").first.click()
        page.wait_for_selector("h1:has-text('Failed Stripe events')")
        row = page.locator("tr.failed-event").first
        event_id = row.get_attribute("data-event-id")
        assert row.get_attribute("data-status") == "retry"
        assert "Stripe answered with a server error." in row.inner_text()
        assert re.search(r"ago|just now", row.locator("time").inner_text())
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC",
                            row.locator("time").get_attribute("title"))
        widths.check(page, "failed-events")
        save_readme_screenshot(page, "failed-events.png", full_page=True)
    finally:
        double.faults.clear()
    row.locator("button:has-text('Retry')").click()
    page.wait_for_selector(f".flash:has-text('Retrying Stripe event {event_id}')")
    deadline = time.monotonic() + 30
    while not served.api("/customers?email=late@demo.test").json()["data"]:
        assert time.monotonic() < deadline, "the retried event was not applied"
        time.sleep(0.3)
    page.goto(served.project_url(f"/integrations/stripe/webhooks/events/{event_id}"))
    facts = page.locator("table.facts").inner_text()
    assert "applied" in facts and re.search(r"Attempts\s+1\b", facts), facts
    widths.check(page)
    page.goto(served.project_url("/integrations/stripe/webhooks/failed"))
    assert page.locator("tr.failed-event").count() == 0
    page.goto(served.project_url("/integrations"))
    assert "no failures" in page.locator(".webhook-health").inner_text()

    # An automation from a suggestion, with a condition from the builder; preview, test
    # send to the member's own address, delete.
    page.click("nav >> text=Automations")
    widths.check(page)
    dunning = page.locator(".suggestion", has_text="dunning")
    assert dunning.locator(".in-use").count() == 1  # the demo already uses it
    trial = page.locator(".suggestion").filter(has_not=page.locator(".in-use")).first
    trial.locator("text=Use this template").click()
    page.wait_for_selector("#trigger")
    builder = page.locator('.rule-builder[data-kind="traits"]')
    builder.locator(".add-condition").click()
    row = builder.locator(".rule-row").last
    row.locator("select").first.select_option("stripe_subscription_status")
    row.locator("select").nth(1).select_option("in")
    row.locator("input").fill("trialing, active")
    rule = json.loads(page.locator("#conditions_traits").input_value())
    assert rule["all"][-1] == {"trait": "stripe_subscription_status", "op": "in",
                               "value": ["trialing", "active"]}, rule
    widths.check(page)
    name = page.locator("#name").input_value()
    page.click("button:has-text('Save')")
    page.wait_for_selector(f".flash:has-text('{name}')")
    assert page.locator(".suggestion", has_text=name).locator(".in-use").count() == 1
    saved = next(a for a in served.api("/automations").json()["data"] if a["name"] == name)
    assert saved["conditions"]["traits"]["all"][-1]["value"] == ["trialing", "active"]
    page.click(f"a:has-text('{name}')")
    page.click("text=Preview & test send")
    page.fill("#email", target["email"])
    page.click("button:has-text('Render')")
    subject = page.locator(".preview-subject").inner_text()
    assert subject and "{{" not in subject
    widths.check(page)
    page.click("button:has-text('Send a test to')")
    page.wait_for_selector(f".flash:has-text('Test email sent to {served.email}')")
    tests_sent = [m for m in served.mail.accepted if m["Subject"].startswith("[Test]")]
    assert len(tests_sent) == 1 and tests_sent[0]["To"] == served.email
    page.goto(served.project_url("/automations/messages"))  # a wide table: scrolls in its box
    assert page.locator("tr.message").count() >= 1
    widths.check(page)
    page.goto(served.project_url("/revenue"))
    widths.check(page)
    page.goto(served.project_url(f"/automations/{saved['id']}"))
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button:has-text('Delete this automation')")
    page.wait_for_selector(".flash:has-text('deleted')")
    assert all(a["id"] != saved["id"] for a in served.api("/automations").json()["data"])

    # Disconnect.
    page.goto(served.project_url("/integrations"))
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button:has-text('Disconnect')")
    page.wait_for_selector("text=Connect a test-mode account")

    widths.check(page)

    # A page that does not exist stays in the layout, with a way back.
    page.goto(served.project_url("/customers/99999999"))
    page.click("text=Back to Demo Shop")
    page.wait_for_url(re.compile(r"/integrations$"))
    page.goto(served.project_url("/customers/99999999"))
    widths.check(page)
    assert len(widths.seen) >= 10, widths.seen
    widths.context.close()
