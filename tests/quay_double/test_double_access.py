"""Authentication, permissions, repository states, immutable tags and error bodies."""

from __future__ import annotations

import httpx
import pytest

from quay_tag_testing.quay_double import QuayDouble

from .seed_data import (
    ADMIN_TOKEN,
    CURRENT,
    FOREIGN_REPOSITORY,
    READ_SCOPE_TOKEN,
    READER_TOKEN,
    REPOSITORY,
    SECOND,
    USER_SCOPE_TOKEN,
)

TAG_URL = f"{REPOSITORY}/tag/"


def client_for(quay: QuayDouble, headers: dict[str, str]) -> httpx.Client:
    # Plain HTTP needs no CA certificates, and loading them is slow (see conftest.py).
    return httpx.Client(base_url=quay.url + "/api/v1/repository/", headers=headers, timeout=5.0, verify=False)


WRITES = [
    ("PUT", "latest", {"manifest_digest": SECOND}),
    ("POST", "latest/restore", {"manifest_digest": SECOND}),
    ("DELETE", "latest", None),
]


def send_write(client: httpx.Client, method: str, path: str, body: object) -> httpx.Response:
    return client.request(method, f"{REPOSITORY}/tag/{path}", json=body)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Basic YWxpY2U6cGFzc3dvcmQ="},
        {"Authorization": ADMIN_TOKEN},
        {"Authorization": f"Token {ADMIN_TOKEN}"},
    ],
    ids=["none", "unknown-token", "basic", "bare-token", "other-scheme"],
)
def test_missing_identity_is_401(quay: QuayDouble, headers: dict[str, str]) -> None:
    with client_for(quay, headers) as client:
        response = client.get(TAG_URL)

    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {
        "detail": "Requires authentication",
        "error_message": "Requires authentication",
        "error_type": "invalid_token",
        "title": "invalid_token",
        "type": f"{quay.url}/api/v1/error/invalid_token",
        "status": 401,
    }


def test_bearer_scheme_is_case_insensitive(quay: QuayDouble) -> None:
    with client_for(quay, {"Authorization": f"bearer {ADMIN_TOKEN}"}) as client:
        response = client.get(TAG_URL)

    assert response.status_code == 200


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_write_without_token_is_401(quay: QuayDouble, method: str, path: str, body: object) -> None:
    with client_for(quay, {}) as client:
        response = send_write(client, method, path, body)

    assert response.status_code == 401
    assert response.json()["error_type"] == "invalid_token"


def test_foreign_namespace_is_403(quay: QuayDouble, api: httpx.Client) -> None:
    response = api.get(f"{FOREIGN_REPOSITORY}/tag/")

    assert response.status_code == 403
    assert response.json() == {
        "detail": "Unauthorized",
        "error_message": "Unauthorized",
        "error_type": "insufficient_scope",
        "title": "insufficient_scope",
        "type": f"{quay.url}/api/v1/error/insufficient_scope",
        "status": 403,
    }


def test_unknown_namespace_is_403(api: httpx.Client) -> None:
    response = api.get("nobody/app/tag/")

    assert response.status_code == 403
    assert response.json()["error_type"] == "insufficient_scope"


def test_unknown_repository_in_own_namespace_is_404(quay: QuayDouble, api: httpx.Client) -> None:
    response = api.get("acme/missing/tag/")

    assert response.status_code == 404
    assert response.json() == {
        "detail": "Not Found",
        "error_message": "Not Found",
        "error_type": "not_found",
        "title": "not_found",
        "type": f"{quay.url}/api/v1/error/not_found",
        "status": 404,
    }


def test_users_own_namespace_is_admin(quay: QuayDouble) -> None:
    """Every user is admin on the namespace named after it, so an unknown repository there is 404."""
    with client_for(quay, {"Authorization": f"Bearer {READER_TOKEN}"}) as client:
        response = client.get("bob/anything/tag/")

    assert response.status_code == 404


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_read_role_cannot_write(quay: QuayDouble, method: str, path: str, body: object) -> None:
    with client_for(quay, {"Authorization": f"Bearer {READER_TOKEN}"}) as client:
        read = client.get(TAG_URL)
        write = send_write(client, method, path, body)

    assert read.status_code == 200
    assert write.status_code == 403
    assert write.json()["error_type"] == "insufficient_scope"


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_read_scope_cannot_write(quay: QuayDouble, method: str, path: str, body: object) -> None:
    with client_for(quay, {"Authorization": f"Bearer {READ_SCOPE_TOKEN}"}) as client:
        read = client.get(TAG_URL)
        write = send_write(client, method, path, body)

    assert read.status_code == 200
    assert write.status_code == 403


def test_token_without_repo_scope_cannot_read(quay: QuayDouble) -> None:
    with client_for(quay, {"Authorization": f"Bearer {USER_SCOPE_TOKEN}"}) as client:
        response = client.get(TAG_URL)

    assert response.status_code == 403


def test_forbidden_precedes_bad_arguments(quay: QuayDouble, api: httpx.Client) -> None:
    response = api.get(f"{FOREIGN_REPOSITORY}/tag/", params={"limit": "x"})

    assert response.status_code == 403


@pytest.mark.parametrize(("state", "number"), [("READ_ONLY", 1), ("MIRROR", 2)])
@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_non_normal_repository_rejects_writes(
    quay: QuayDouble, api: httpx.Client, state: str, number: int, method: str, path: str, body: object
) -> None:
    quay.set_repository_state(REPOSITORY, state)

    response = send_write(api, method, path, body)

    assert response.status_code == 503
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"message": f"Repository is in read only or mirror mode: {number}"}
    assert quay.alive_digest(REPOSITORY, "latest") == CURRENT


def test_read_only_check_precedes_body_parsing(quay: QuayDouble, api: httpx.Client) -> None:
    quay.set_repository_state(REPOSITORY, "READ_ONLY")

    response = api.put(TAG_URL + "latest", content=b"not json", headers={"Content-Type": "text/plain"})

    assert response.status_code == 503


def test_permission_check_precedes_read_only(quay: QuayDouble) -> None:
    quay.set_repository_state(REPOSITORY, "READ_ONLY")

    with client_for(quay, {"Authorization": f"Bearer {READER_TOKEN}"}) as client:
        response = send_write(client, "PUT", "latest", {"manifest_digest": SECOND})

    assert response.status_code == 403


def test_normal_state_allows_writes_again(quay: QuayDouble, api: httpx.Client) -> None:
    quay.set_repository_state(REPOSITORY, "MIRROR")
    quay.set_repository_state(REPOSITORY, "NORMAL")

    response = send_write(api, "PUT", "latest", {"manifest_digest": SECOND})

    assert response.status_code == 201


def test_mirror_repository_moves_by_hand(quay: QuayDouble) -> None:
    """A mirror sync changes tags in a mirror repository, so the by-hand move ignores the state."""
    quay.set_repository_state(REPOSITORY, "MIRROR")

    quay.move_tag(REPOSITORY, "latest", SECOND)

    assert quay.alive_digest(REPOSITORY, "latest") == SECOND


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_immutable_tag_rejects_writes(
    quay: QuayDouble, api: httpx.Client, method: str, path: str, body: object
) -> None:
    quay.set_immutable(REPOSITORY, "latest")

    response = send_write(api, method, path, body)

    assert response.status_code == 409
    payload = response.json()
    assert payload["error_type"] == "tag_immutable"
    assert payload["title"] == "tag_immutable"
    assert payload["status"] == 409
    assert quay.alive_digest(REPOSITORY, "latest") == CURRENT


def test_immutable_tag_rejects_same_digest_put(quay: QuayDouble, api: httpx.Client) -> None:
    quay.set_immutable(REPOSITORY, "latest")

    response = send_write(api, "PUT", "latest", {"manifest_digest": CURRENT})

    assert response.status_code == 409


def test_immutable_tag_rejects_expiration(quay: QuayDouble, api: httpx.Client) -> None:
    quay.set_immutable(REPOSITORY, "latest")

    response = api.put(TAG_URL + "latest", json={"expiration": None})

    assert response.status_code == 409


def test_immutable_tag_allows_other_tags(quay: QuayDouble, api: httpx.Client) -> None:
    quay.set_immutable(REPOSITORY, "latest")

    response = send_write(api, "PUT", "stable", {"manifest_digest": CURRENT})

    assert response.status_code == 201


def test_mutable_again_allows_writes(quay: QuayDouble, api: httpx.Client) -> None:
    quay.set_immutable(REPOSITORY, "latest")
    quay.set_immutable(REPOSITORY, "latest", immutable=False)

    response = send_write(api, "PUT", "latest", {"manifest_digest": SECOND})

    assert response.status_code == 201


def test_unknown_api_url_is_json_404(quay: QuayDouble, api: httpx.Client) -> None:
    response = api.get(quay.url + "/api/v1/nothing/here")

    assert response.status_code == 404
    assert response.json() == {
        "message": "The requested URL was not found on the server. If you entered the URL manually please "
        "check your spelling and try again."
    }


def test_wrong_method_is_json_405(api: httpx.Client) -> None:
    response = api.get(TAG_URL + "latest")

    assert response.status_code == 405
    assert response.json() == {"message": "The method is not allowed for the requested URL."}
    assert "DELETE" in response.headers["Allow"]
    assert "PUT" in response.headers["Allow"]
