from tests.conftest import api


def test_login_and_integrations_page(tenant):
    project_id, _key, c = tenant
    page = c.get(f"/projects/{project_id}/integrations")
    assert page.status_code == 200
    assert "Stripe" in page.get_data(as_text=True)


def test_api_creates_and_reads_customer(client, tenant):
    _pid, key, _c = tenant
    r = api(client, key).post("/api/v1/customers", json={"email": "Ann@X.com", "traits": {"plan": "pro"}})
    assert r.status_code == 201, r.json
    r2 = api(client, key).post("/api/v1/customers", json={"email": "ann@x.com", "name": "Ann"})
    assert r2.status_code == 200
    assert r2.json["id"] == r.json["id"]
    assert r2.json["traits"] == {"plan": "pro"}
