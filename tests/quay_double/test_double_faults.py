"""Fault injection, added latency and the request log, through the Python API and the admin API."""

from __future__ import annotations

import time

import httpx
import pytest

from quay_tag_testing.quay_double import FaultRule, QuayDouble

from .seed_data import REPOSITORY, SECOND

TAG_URL = f"{REPOSITORY}/tag/"
PROXY_PAGE = "<html><body><h1>429 Too Many Requests</h1></body></html>"


def test_fault_returns_status_headers_and_html(quay: QuayDouble, api: httpx.Client) -> None:
    quay.add_fault(status=429, body=PROXY_PAGE, headers={"Retry-After": "7"})

    response = api.get(TAG_URL)

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.headers["Content-Type"] == "text/html"
    assert response.text == PROXY_PAGE


def test_fault_json_body_and_content_type(quay: QuayDouble, api: httpx.Client) -> None:
    quay.add_fault(status=500, body={"message": "Internal Server Error"})

    first = api.get(TAG_URL)

    assert first.status_code == 500
    assert first.headers["Content-Type"] == "application/json"
    assert first.json() == {"message": "Internal Server Error"}


def test_fault_custom_content_type(quay: QuayDouble, api: httpx.Client) -> None:
    quay.add_fault(status=502, body='{"misleading": true}', content_type="text/plain")

    response = api.get(TAG_URL)

    assert response.status_code == 502
    assert response.headers["Content-Type"] == "text/plain"
    assert response.text == '{"misleading": true}'


def test_fault_count_limits_uses(quay: QuayDouble, api: httpx.Client) -> None:
    quay.add_fault(status=503, count=2)

    statuses = [api.get(TAG_URL).status_code for _ in range(3)]

    assert statuses == [503, 503, 200]
    assert quay.traffic.faults() == []


def test_fault_without_count_lasts_until_cleared(quay: QuayDouble, api: httpx.Client) -> None:
    quay.add_fault(status=504)

    statuses = [api.get(TAG_URL).status_code for _ in range(3)]
    quay.clear_faults()

    assert statuses == [504, 504, 504]
    assert api.get(TAG_URL).status_code == 200


def test_fault_matches_method_and_path(quay: QuayDouble, api: httpx.Client) -> None:
    quay.add_fault(method="put", path=r"/tag/latest$", status=500)

    other_tag = api.put(TAG_URL + "stable", json={"manifest_digest": SECOND})
    listing = api.get(TAG_URL)
    matched = api.put(TAG_URL + "latest", json={"manifest_digest": SECOND})

    assert other_tag.status_code == 201
    assert listing.status_code == 200
    assert matched.status_code == 500
    assert quay.alive_digest(REPOSITORY, "latest") != SECOND


def test_first_matching_fault_applies(quay: QuayDouble, api: httpx.Client) -> None:
    quay.add_fault(status=500, count=1)
    quay.add_fault(status=502, count=1)

    statuses = [api.get(TAG_URL).status_code for _ in range(3)]

    assert statuses == [500, 502, 200]


def test_fault_delay_then_normal_response(quay: QuayDouble, api: httpx.Client) -> None:
    quay.add_fault(delay=0.3, count=1)

    started = time.monotonic()
    response = api.get(TAG_URL)
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert elapsed >= 0.3


def test_fault_delay_causes_client_timeout(quay: QuayDouble, api: httpx.Client) -> None:
    quay.add_fault(delay=0.5, status=200, body={"tags": []}, count=1)

    with pytest.raises(httpx.ReadTimeout):
        api.get(TAG_URL, timeout=0.1)


def test_fault_drop_closes_connection(quay: QuayDouble, api: httpx.Client) -> None:
    quay.add_fault(drop=True, count=1)

    with pytest.raises(httpx.RemoteProtocolError):
        api.get(TAG_URL)

    assert api.get(TAG_URL).status_code == 200
    records = quay.requests()
    assert records[0].status is None
    assert records[0].fault is True
    assert records[1].status == 200
    assert records[1].fault is False


def test_fault_body_delay_sends_half_then_rest(quay: QuayDouble, api: httpx.Client) -> None:
    quay.add_fault(status=200, body='{"tags": [], "page": 1, "has_additional": false}', body_delay=0.4, count=1)

    started = time.monotonic()
    with api.stream("GET", TAG_URL) as response:
        headers_after = time.monotonic() - started
        body = response.read()
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert headers_after < 0.3
    assert elapsed >= 0.4
    assert body == b'{"tags": [], "page": 1, "has_additional": false}'


def test_fault_body_delay_times_out_mid_body(quay: QuayDouble, api: httpx.Client) -> None:
    quay.add_fault(status=200, body='{"tags": []}', body_delay=1.0, count=1)

    with api.stream("GET", TAG_URL, timeout=0.2) as response:
        assert response.status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            response.read()

    assert api.get(TAG_URL).status_code == 200


def test_fault_response_delay_applies_write_first(quay: QuayDouble, api: httpx.Client) -> None:
    quay.add_fault(method="PUT", response_delay=1.0, count=1)

    with pytest.raises(httpx.ReadTimeout):
        api.put(TAG_URL + "latest", json={"manifest_digest": SECOND}, timeout=0.3)

    # The response is still held, but the tag has already moved and the log has the outcome.
    assert quay.alive_digest(REPOSITORY, "latest") == SECOND
    put = [record for record in quay.requests() if record.method == "PUT"]
    assert len(put) == 1
    assert put[0].status == 201


def test_fault_response_delay_then_response(quay: QuayDouble, api: httpx.Client) -> None:
    quay.add_fault(method="PUT", response_delay=0.3, count=1)

    started = time.monotonic()
    response = api.put(TAG_URL + "latest", json={"manifest_digest": SECOND})

    assert response.status_code == 201
    assert time.monotonic() - started >= 0.3
    assert quay.requests()[-1].status == 201


def test_request_log_records_arrival_times(quay: QuayDouble, api: httpx.Client) -> None:
    before = time.monotonic()
    api.get(TAG_URL)
    time.sleep(0.05)
    api.get(TAG_URL)
    after = time.monotonic()

    first, second = quay.requests()

    assert before <= first.received <= second.received <= after
    assert second.received - first.received >= 0.05


def test_faults_never_hit_admin_routes(quay: QuayDouble, admin: httpx.Client) -> None:
    quay.add_fault(status=500)
    quay.add_fault(drop=True)

    response = admin.get("state")

    assert response.status_code == 200


def test_latency_delays_api_only(quay: QuayDouble, api: httpx.Client, admin: httpx.Client) -> None:
    quay.set_latency(0.3)

    started = time.monotonic()
    assert api.get(TAG_URL).status_code == 200
    api_elapsed = time.monotonic() - started
    started = time.monotonic()
    assert admin.get("state").status_code == 200
    admin_elapsed = time.monotonic() - started

    assert api_elapsed >= 0.3
    assert admin_elapsed < 0.3


def test_request_log_records_api_requests(quay: QuayDouble, api: httpx.Client, admin: httpx.Client) -> None:
    api.get(TAG_URL, params={"limit": "5", "specificTag": "latest"})
    api.put(TAG_URL + "latest", json={"manifest_digest": SECOND})
    api.delete(TAG_URL + "nope")
    admin.get("state")

    records = [(record.method, record.path, record.query, record.status) for record in quay.requests()]

    assert records == [
        ("GET", f"/api/v1/repository/{REPOSITORY}/tag/", {"limit": "5", "specificTag": "latest"}, 200),
        ("PUT", f"/api/v1/repository/{REPOSITORY}/tag/latest", {}, 201),
        ("DELETE", f"/api/v1/repository/{REPOSITORY}/tag/nope", {}, 404),
    ]
    assert quay.request_counts() == {"GET": 1, "PUT": 1, "DELETE": 1}


def test_request_log_reset(quay: QuayDouble, api: httpx.Client) -> None:
    api.get(TAG_URL)

    quay.reset_requests()

    assert quay.requests() == []
    assert quay.request_counts() == {}


def test_fault_rule_rejects_bad_fields() -> None:
    with pytest.raises(ValueError, match="regular expression"):
        FaultRule(path="(", status=500)
    with pytest.raises(ValueError, match="drop"):
        FaultRule(drop=True, status=500)
    with pytest.raises(ValueError, match="need a status"):
        FaultRule(body="x")
    with pytest.raises(ValueError):
        FaultRule(status=700)
    with pytest.raises(ValueError, match="need a status"):
        FaultRule(body_delay=1.0)
    with pytest.raises(ValueError, match="response_delay"):
        FaultRule(status=500, response_delay=1.0)
    with pytest.raises(ValueError, match="response_delay"):
        FaultRule(drop=True, response_delay=1.0)


def test_admin_api_faults(quay: QuayDouble, api: httpx.Client, admin: httpx.Client) -> None:
    created = admin.post("faults", json={"method": "GET", "status": 429, "headers": {"Retry-After": "2"}, "count": 1})
    listed = admin.get("faults").json()["faults"]
    faulted = api.get(TAG_URL)
    after = api.get(TAG_URL)

    assert created.status_code == 201
    assert created.json() == {"id": 1}
    assert listed[0]["id"] == 1
    assert listed[0]["remaining"] == 1
    assert listed[0]["rule"]["status"] == 429
    assert faulted.status_code == 429
    assert faulted.headers["Retry-After"] == "2"
    assert after.status_code == 200


def test_admin_api_clear_faults(quay: QuayDouble, api: httpx.Client, admin: httpx.Client) -> None:
    admin.post("faults", json={"status": 500})

    cleared = admin.delete("faults")

    assert cleared.status_code == 204
    assert api.get(TAG_URL).status_code == 200


def test_admin_api_rejects_bad_fault(admin: httpx.Client) -> None:
    response = admin.post("faults", json={"status": 500, "colour": "red"})

    assert response.status_code == 400
    assert "colour" in response.json()["error"]


def test_admin_api_latency(quay: QuayDouble, api: httpx.Client, admin: httpx.Client) -> None:
    response = admin.post("latency", json={"seconds": 0.2})

    started = time.monotonic()
    api.get(TAG_URL)
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert response.json() == {"latency": 0.2}
    assert elapsed >= 0.2


def test_admin_api_request_log(api: httpx.Client, admin: httpx.Client) -> None:
    api.get(TAG_URL, params={"page": "2"})
    api.get(f"{REPOSITORY}/tag")

    body = admin.get("requests").json()
    reset = admin.delete("requests")

    assert body["counts"] == {"GET": 2}
    received = body["requests"][0].pop("received")
    assert body["requests"][0] == {
        "method": "GET",
        "path": f"/api/v1/repository/{REPOSITORY}/tag/",
        "query": {"page": "2"},
        "status": 200,
        "fault": False,
    }
    assert isinstance(received, float)
    assert body["requests"][1]["received"] >= received
    assert body["requests"][1]["status"] == 308
    assert reset.status_code == 204
    assert admin.get("requests").json() == {"requests": [], "counts": {}}
