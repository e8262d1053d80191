"""Digests and the seed that the Quay double's tests start from."""

from __future__ import annotations

import hashlib
from typing import Any

# Unix seconds at which the seeded clock stays until a test advances it: Tue, 21 May 2024
# 20:41:09 UTC.
FROZEN_TIME = 1716324069

REPOSITORY = "acme/app"
OTHER_REPOSITORY = "acme/tools"
FOREIGN_REPOSITORY = "globex/app"

ADMIN_TOKEN = "admin-token"  # alice, admin on acme, scopes repo:read and repo:write
READ_SCOPE_TOKEN = "read-scope-token"  # alice, scope repo:read only
USER_SCOPE_TOKEN = "user-scope-token"  # alice, scope user:read only
READER_TOKEN = "reader-token"  # bob, read role on acme, scopes repo:read and repo:write


def make_digest(label: str) -> str:
    return "sha256:" + hashlib.sha256(label.encode()).hexdigest()


CURRENT = make_digest("current")  # latest points here
SECOND = make_digest("second")  # stable points here
DEAD_ONLY = make_digest("dead-only")  # referenced only by an ended row of latest
CHILD = make_digest("child")  # child of LIST
LIST = make_digest("list")  # manifest list, tagged multi
UNTAGGED = make_digest("untagged")  # stored, never tagged
UNKNOWN = make_digest("unknown")  # never stored

SIZES = {CURRENT: 1000, SECOND: 2000, DEAD_ONLY: 3000, CHILD: 4000, UNTAGGED: 5000}


def base_seed() -> dict[str, Any]:
    """Return a fresh seed dict, so that a test may change its copy."""
    return {
        "frozen_time": FROZEN_TIME,
        "users": [
            {"name": "alice", "roles": {"acme": "admin"}},
            {"name": "bob", "roles": {"acme": "read"}},
        ],
        "tokens": [
            {"token": ADMIN_TOKEN, "user": "alice", "scopes": ["repo:read", "repo:write"]},
            {"token": READ_SCOPE_TOKEN, "user": "alice", "scopes": ["repo:read"]},
            {"token": USER_SCOPE_TOKEN, "user": "alice", "scopes": ["user:read"]},
            {"token": READER_TOKEN, "user": "bob", "scopes": ["repo:read", "repo:write"]},
        ],
        "namespaces": [{"name": "acme"}, {"name": "globex"}],
        "repositories": [
            {
                "name": REPOSITORY,
                "manifests": [
                    {"digest": LIST, "is_manifest_list": True, "children": [CHILD]},
                    *({"digest": digest, "size": size} for digest, size in SIZES.items()),
                ],
                "tags": [
                    {
                        "name": "latest",
                        "history": [
                            {"digest": DEAD_ONLY, "started_seconds_ago": 7200},
                            {"digest": CURRENT, "started_seconds_ago": 3600},
                        ],
                    },
                    {"name": "stable", "history": [{"digest": SECOND, "started_seconds_ago": 1800}]},
                    {"name": "multi", "history": [{"digest": LIST, "started_seconds_ago": 900}]},
                ],
            },
            {
                "name": OTHER_REPOSITORY,
                "manifests": [{"digest": CURRENT, "size": 1000}],
                "tags": [{"name": "latest", "digest": CURRENT}],
            },
            {
                "name": FOREIGN_REPOSITORY,
                "manifests": [{"digest": CURRENT, "size": 1000}],
                "tags": [{"name": "latest", "digest": CURRENT}],
            },
        ],
    }
