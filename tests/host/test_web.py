"""The web UI: login/logout, CSRF on every form, project membership, the host's pages."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

from crowdpower.customers import record_event
from crowdpower.extensions import db
from crowdpower.models import Customer
from crowdpower.tenancy import project_scope
from tests.conftest import csrf_from

FORM_RE = re.compile(r"<form\b([^>]*)>(.*?)</form>", re.S | re.I)


def token(c, url: str = "/login") -> str:
    return csrf_from(c.get(url).get_data(as_text=True))


def project_pages(project_id: int, customer_id: int) -> list[str]:
    base = f"/projects/{project_id}"
    return [f"{base}/integrations", f"{base}/customers", f"{base}/customers/{customer_id}",
            f"{base}/segments"]


def post_forms(html: str) -> list[str]:
    return [body for attrs, body in FORM_RE.findall(html)
            if re.search(r'method="post"', attrs, re.I)]


# -- login / logout ---------------------------------------------------------------------

def test_login_page_carries_a_csrf_token(client):
    page = client.get("/login")
    assert page.status_code == 200
    assert csrf_from(page.get_data(as_text=True))


def test_bad_login_shows_an_error_and_starts_no_session(app, client, make_project, make_user):
    project_id, _ = make_project()
    make_user("owner@acme.test", project_id)
    for email, password in (("owner@acme.test", "wrong"), ("nobody@acme.test", "correct horse"),
                            ("", "")):
        r = client.post("/login", data={"email": email, "password": password,
                                        "csrf_token": token(client)})
        assert r.status_code == 401, email
        assert "Wrong email or password." in r.get_data(as_text=True)
        with client.session_transaction() as session:
            assert "user_id" not in session
        assert client.get(f"/projects/{project_id}/customers").status_code == 302


def test_login_ignores_email_case_and_logout_ends_the_session(app, client, make_project,
                                                              make_user):
    project_id, _ = make_project()
    make_user("owner@acme.test", project_id)
    r = client.post("/login", data={"email": " OWNER@Acme.test ", "password": "correct horse",
                                    "csrf_token": token(client)})
    assert r.status_code == 302
    page = client.get(f"/projects/{project_id}/customers")
    assert page.status_code == 200
    r = client.post("/logout", data={"csrf_token": csrf_from(page.get_data(as_text=True))})
    assert r.status_code == 302 and r.headers["Location"].endswith("/login")
    with client.session_transaction() as session:
        assert "user_id" not in session
    assert client.get(f"/projects/{project_id}/customers").status_code == 302


def test_not_logged_in_is_sent_to_login_and_back(app, client, make_project, make_user):
    project_id, _ = make_project()
    make_user("owner@acme.test", project_id)
    r = client.get(f"/projects/{project_id}/segments")
    assert r.status_code == 302 and "/login?next=" in r.headers["Location"]
    login_url = r.headers["Location"]
    r = client.post(login_url, data={"email": "owner@acme.test", "password": "correct horse",
                                     "csrf_token": token(client)})
    assert r.status_code == 302
    assert r.headers["Location"].startswith(f"/projects/{project_id}/segments")


def test_login_never_redirects_off_site(app, client, make_project, make_user):
    project_id, _ = make_project()
    make_user("owner@acme.test", project_id)
    for target in ("//evil.example", "/\\evil.example", "https://evil.example", "evil.example"):
        r = client.post("/login", query_string={"next": target},
                        data={"email": "owner@acme.test", "password": "correct horse",
                              "csrf_token": token(client)})
        assert r.status_code == 302 and r.headers["Location"] == "/", target


# -- CSRF -------------------------------------------------------------------------------

def test_every_post_form_carries_a_csrf_token(tenant, add_customer):
    project_id, _key, c = tenant
    cid = add_customer(project_id, "ann@example.com")
    seen = 0
    for url in ["/login", *project_pages(project_id, cid)]:
        html = c.get(url).get_data(as_text=True)
        for form in post_forms(html):
            seen += 1
            assert 'name="csrf_token"' in form, f"a POST form on {url} has no CSRF token"
    assert seen >= 5  # logout on every page, unsubscribe, new segment


def test_posts_without_a_csrf_token_are_refused(tenant, add_customer):
    project_id, _key, c = tenant
    cid = add_customer(project_id, "ann@example.com")
    posts = {
        "/login": {"email": "owner@acme.test", "password": "correct horse"},
        "/logout": {},
        f"/projects/{project_id}/customers/{cid}/unsubscribe": {},
        f"/projects/{project_id}/segments": {"name": "X", "rules": '{"all": []}'},
    }
    for url, data in posts.items():
        for bad in ({}, {"csrf_token": "forged"}):
            r = c.post(url, data={**data, **bad})
            assert r.status_code == 400, url
            assert "CSRF" in r.get_data(as_text=True)
    # nothing happened: still logged in, still subscribed, no segment
    assert c.get(f"/projects/{project_id}/segments").status_code == 200
    with project_scope(project_id):
        assert db.session.get(Customer, cid).unsubscribed_at is None
    assert "No segments yet." in c.get(f"/projects/{project_id}/segments").get_data(
        as_text=True)


# -- projects ---------------------------------------------------------------------------

def test_project_switcher_lists_only_the_users_projects(app, client, make_project, make_user,
                                                        login, other_tenant):
    first, _ = make_project("Acme")
    second, _ = make_project("Initech")
    make_user("owner@acme.test", first)
    make_user("owner@acme.test", second)
    c = login("owner@acme.test")
    index = c.get("/")
    assert index.status_code == 200
    html = index.get_data(as_text=True)
    assert "Acme" in html and "Initech" in html and "Globex" not in html
    for project_id, name in ((first, "Acme"), (second, "Initech")):
        page = c.get(f"/projects/{project_id}/customers").get_data(as_text=True)
        switcher = page[page.index('id="project-switcher"'):]
        switcher = switcher[:switcher.index("</details>")]
        assert f"{name} ▾" in switcher
        assert f'href="/projects/{first}/integrations"' in switcher
        assert f'href="/projects/{second}/integrations"' in switcher
        assert f"/projects/{other_tenant[0]}/" not in switcher


def test_a_single_project_opens_directly(tenant):
    project_id, _key, c = tenant
    r = c.get("/")
    assert r.status_code == 302
    assert r.headers["Location"] == f"/projects/{project_id}/integrations"


def test_non_members_get_404_on_every_project_page(tenant, other_tenant, add_customer):
    project_id, _key, c = tenant
    theirs, _key2, them = other_tenant
    cid = add_customer(project_id, "ann@example.com")
    for url in project_pages(project_id, cid):
        assert them.get(url).status_code == 404, url
        assert c.get(url).status_code == 200, url
    for url in project_pages(424242, cid):
        assert c.get(url).status_code == 404, url
    r = them.post(f"/projects/{project_id}/customers/{cid}/unsubscribe",
                  data={"csrf_token": token(them, f"/projects/{theirs}/segments")})
    assert r.status_code == 404
    r = them.post(f"/projects/{project_id}/segments",
                  data={"name": "X", "rules": '{"all": []}',
                        "csrf_token": token(them, f"/projects/{theirs}/segments")})
    assert r.status_code == 404
    # and a 404 page shows nothing of the project
    assert "Acme" not in them.get(f"/projects/{project_id}/customers").get_data(as_text=True)


def test_integrations_page_lists_the_stripe_card(tenant, other_tenant):
    project_id, _key, c = tenant
    html = c.get(f"/projects/{project_id}/integrations").get_data(as_text=True)
    assert 'id="integration-stripe"' in html and "Stripe" in html


# -- customers --------------------------------------------------------------------------

def test_customers_list_search_and_segment_filter(tenant, other_tenant, add_customer):
    project_id, _key, c = tenant
    add_customer(project_id, "ann@example.com", {"plan": "pro"}, name="Ann Lee")
    add_customer(project_id, "bob@example.com", {"plan": "basic"})
    add_customer(project_id, "100%@example.com", {"plan": "basic"})
    add_customer(other_tenant[0], "zed@example.com", {"plan": "pro"})
    base = f"/projects/{project_id}/customers"
    html = c.get(base).get_data(as_text=True)
    assert "ann@example.com" in html and "bob@example.com" in html
    assert "zed@example.com" not in html
    html = c.get(f"{base}?q=LEE").get_data(as_text=True)
    assert "ann@example.com" in html and "bob@example.com" not in html
    html = c.get(f"{base}?q=%25").get_data(as_text=True)  # a literal %, not a wildcard
    assert "100%@example.com" in html and "ann@example.com" not in html

    r = c.post(f"/projects/{project_id}/segments", data={
        "name": "Pro", "rules": '{"all": [{"trait": "plan", "op": "eq", "value": "pro"}]}',
        "csrf_token": token(c, f"/projects/{project_id}/segments")})
    assert r.status_code == 302
    with project_scope(project_id):
        from crowdpower.models import Segment

        seg_id = db.session.scalar(db.select(Segment.id))
    html = c.get(f"{base}?segment={seg_id}").get_data(as_text=True)
    assert "in “Pro”" in html and "ann@example.com" in html and "bob@example.com" not in html
    # twin: the other project's member cannot use this project's segment in their list
    them = other_tenant[2]
    assert them.get(f"/projects/{other_tenant[0]}/customers?segment={seg_id}"
                    ).status_code == 404


def test_customers_list_pages_by_fifty(tenant):
    project_id, _key, c = tenant
    with project_scope(project_id):
        db.session.add_all([Customer(project_id=project_id, email=f"c{i:02d}@example.com",
                                     email_key=f"c{i:02d}@example.com") for i in range(51)])
        db.session.commit()
    html = c.get(f"/projects/{project_id}/customers").get_data(as_text=True)
    assert "c50@example.com" in html and "c00@example.com" not in html
    assert re.search(r'class="muted customer-total">51<', html)
    link = re.search(r'href="([^"]*page=2[^"]*)" rel="next"', html).group(1).replace("&amp;", "&")
    html = c.get(link).get_data(as_text=True)
    assert "c00@example.com" in html and "c50@example.com" not in html
    assert 'rel="next"' not in html and 'rel="prev"' in html and "51–51 of 51" in html


def test_customer_profile_shows_traits_and_events_newest_first(tenant, other_tenant,
                                                               add_customer):
    project_id, _key, c = tenant
    cid = add_customer(project_id, "ann@example.com", {"plan": "pro", "seats": 3},
                       name="Ann Lee")
    with project_scope(project_id):
        for day, name in ((1, "First Thing"), (3, "Third Thing"), (2, "Second Thing")):
            record_event(project_id, cid, name, {"day": day},
                         occurred_at=datetime(2024, 1, day, tzinfo=UTC))
        db.session.commit()
    html = c.get(f"/projects/{project_id}/customers/{cid}").get_data(as_text=True)
    assert "Ann Lee" in html and "<code>plan</code>" in html and "pro" in html
    assert "<code>seats</code>" in html
    positions = [html.index(n) for n in ("Third Thing", "Second Thing", "First Thing")]
    assert positions == sorted(positions)
    # twin: this project's customer under the other project's URL (as its member)
    their_id, _k, them = other_tenant
    assert them.get(f"/projects/{their_id}/customers/{cid}").status_code == 404
    assert c.get(f"/projects/{project_id}/customers/{cid + 1000}").status_code == 404


def test_unsubscribe_toggles_with_the_form(tenant, add_customer):
    project_id, _key, c = tenant
    cid = add_customer(project_id, "ann@example.com")
    url = f"/projects/{project_id}/customers/{cid}"
    r = c.post(f"{url}/unsubscribe", data={"csrf_token": token(c, url)})
    assert r.status_code == 302
    assert "unsubscribed" in c.get(url).get_data(as_text=True)
    with project_scope(project_id):
        assert db.session.get(Customer, cid).unsubscribed_at is not None
    c.post(f"{url}/unsubscribe", data={"csrf_token": token(c, url)})
    with project_scope(project_id):
        db.session.expire_all()
        assert db.session.get(Customer, cid).unsubscribed_at is None


# -- segments ---------------------------------------------------------------------------

def test_segments_page_shows_counts(tenant, add_customer):
    project_id, _key, c = tenant
    for i, plan in enumerate(["pro", "pro", "basic"]):
        add_customer(project_id, f"c{i}@example.com", {"plan": plan})
    url = f"/projects/{project_id}/segments"
    for name, op in (("Pro", "eq"), ("Others", "neq")):
        rules = json.dumps({"all": [{"trait": "plan", "op": op, "value": "pro"}]})
        r = c.post(url, data={"name": name, "description": f"{op} pro", "rules": rules,
                              "csrf_token": token(c, url)})
        assert r.status_code == 302
    html = c.get(url).get_data(as_text=True)
    counts = dict(re.findall(r'<a href="[^"]*segment=\d+">([^<]+)</a>.*?<td class="count">(\d+)',
                             html, re.S))
    assert counts == {"Pro": "2", "Others": "1"}


def test_an_invalid_segment_form_is_a_400_saying_why(tenant):
    project_id, _key, c = tenant
    url = f"/projects/{project_id}/segments"
    for rules, message in (("{not json", "not valid JSON"),
                           ('{"all": [{"trait": "plan", "op": "like"}]}', "unknown operator"),
                           ('{"any": "x"}', "must be a list")):
        r = c.post(url, data={"name": "Broken", "rules": rules, "csrf_token": token(c, url)})
        assert r.status_code == 400, rules
        html = r.get_data(as_text=True)
        assert message in html and 'value="Broken"' in html  # the form keeps what was typed
        assert "No segments yet." in html


def test_a_duplicate_segment_name_is_refused(tenant):
    project_id, _key, c = tenant
    url = f"/projects/{project_id}/segments"
    data = {"name": "All", "rules": '{"all": []}'}
    assert c.post(url, data={**data, "csrf_token": token(c, url)}).status_code == 302
    r = c.post(url, data={**data, "csrf_token": token(c, url)})
    assert r.status_code == 400 and "already exists" in r.get_data(as_text=True)


def test_error_pages_sit_in_the_layout_with_a_way_back(tenant, client):
    project_id, _key, c = tenant
    page = c.get(f"/projects/{project_id}/customers/999999")
    html = page.get_data(as_text=True)
    assert page.status_code == 404 and "Page not found" in html
    assert f'href="/projects/{project_id}/integrations"' in html  # back to the project
    assert "<nav>" in html  # inside the layout
    other = c.get(f"/projects/{project_id + 1000}/customers")
    assert other.status_code == 404 and "Back to" in other.get_data(as_text=True)


def test_favicon_is_served(client):
    for path in ("/favicon.ico", "/favicon.svg"):
        response = client.get(path)
        assert response.status_code == 200 and response.mimetype == "image/svg+xml"
        assert b"<svg" in response.data


def test_logout_says_so(tenant, client):
    _project_id, _key, c = tenant
    page = c.get("/login")
    token = csrf_from(page.get_data(as_text=True))
    response = c.post("/logout", data={"csrf_token": token}, follow_redirects=True)
    assert "You are logged out." in response.get_data(as_text=True)


def test_customers_list_sorts_filters_by_trait_and_chooses_columns(tenant, other_tenant,
                                                                  add_customer):
    project_id, _key, c = tenant
    add_customer(project_id, "low@example.com", {"seats": 2, "plan": "basic"})
    add_customer(project_id, "high@example.com", {"seats": 30, "plan": "pro"})
    add_customer(project_id, "none@example.com", {"plan": "pro"})
    with project_scope(project_id):
        from crowdpower.models import TraitDefinition

        db.session.add(TraitDefinition(project_id=project_id, key="seats", name="Seats",
                                       type="number"))
        db.session.commit()
    base = f"/projects/{project_id}/customers"
    html = c.get(base, query_string={"sort": "trait:seats", "col": "seats"}).get_data(
        as_text=True)
    order = re.findall(r"(\w+)@example.com</a>", html)
    assert order == ["high", "low", "none"], order  # highest first, missing last
    assert "<th>Seats</th>" in html
    oldest = re.findall(r"(\w+)@example.com</a>", c.get(base, query_string={
        "sort": "oldest"}).get_data(as_text=True))
    assert oldest == ["low", "high", "none"]
    html = c.get(base, query_string={"trait": "seats", "op": "gte", "value": "10"}
                 ).get_data(as_text=True)
    assert re.findall(r"(\w+)@example.com</a>", html) == ["high"]
    assert 'class="muted customer-total">1<' in html
    html = c.get(base, query_string={"trait": "plan", "op": "in", "value": "basic, gold"}
                 ).get_data(as_text=True)
    assert re.findall(r"(\w+)@example.com</a>", html) == ["low"]
    bad = c.get(base, query_string={"trait": "seats", "op": "within_last", "value": "x"})
    assert bad.status_code == 200 and "That filter does not work" in bad.get_data(as_text=True)
    # twin: the other project's member sees none of these
    them = other_tenant[2]
    theirs = them.get(f"/projects/{other_tenant[0]}/customers", query_string={
        "trait": "seats", "op": "exists"}).get_data(as_text=True)
    assert "@example.com</a>" not in theirs
    assert them.get(f"{base}?sort=oldest").status_code == 404
