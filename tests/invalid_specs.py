"""Invalid and borderline RepositoryTag specs, shared by the admission test and the model test.

Each invalid row must be rejected by the CRD at admission and by ``RepositoryTagSpec``, and
both must name the same field. Each borderline valid row must be accepted by both. A row
that one side accepts and the other rejects means the CRD and the models disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DIGEST = "sha256:57583a1b9c0a7509d3417387b4f43acf80d08cdcf5266ac87987be3f8f919d5d"
HEX = DIGEST.removeprefix("sha256:")
# Marks a key that the row removes from the base spec.
REMOVE = object()


def base_spec() -> dict[str, Any]:
    return {"repository": "quayadmin/busybox", "tag": "test", "manifestDigest": DIGEST}


@dataclass(frozen=True)
class SpecCase:
    id: str
    # Keys merged over base_spec(); a value of REMOVE deletes the key.
    changes: dict[str, Any]
    # Path of the invalid field under spec, as kubectl and the operator's message name it.
    field: str = ""

    def spec(self) -> dict[str, Any]:
        spec = base_spec()
        for key, value in self.changes.items():
            if value is REMOVE:
                spec.pop(key, None)
            else:
                spec[key] = value
        return spec


def _invalid(id: str, field: str, **changes: Any) -> SpecCase:
    return SpecCase(id=id, changes=changes, field=field)


def _url(id: str, url: str) -> SpecCase:
    return SpecCase(id=id, changes={"connection": {"url": url}}, field="connection.url")


def _secret_ref(id: str, field: str, reference: Any) -> SpecCase:
    return SpecCase(id=id, changes={"connection": {"tokenSecretRef": reference}}, field=f"connection.{field}")


INVALID_SPECS: tuple[SpecCase, ...] = (
    # manifestDigest
    _invalid("digest-sha512", "manifestDigest", manifestDigest="sha512:" + HEX + HEX),
    _invalid("digest-md5", "manifestDigest", manifestDigest="md5:d41d8cd98f00b204e9800998ecf8427e"),
    _invalid("digest-upper-case-hex", "manifestDigest", manifestDigest="sha256:" + HEX.upper()),
    _invalid("digest-upper-case-algorithm", "manifestDigest", manifestDigest="SHA256:" + HEX),
    _invalid("digest-63-hex", "manifestDigest", manifestDigest="sha256:" + HEX[:63]),
    _invalid("digest-65-hex", "manifestDigest", manifestDigest="sha256:" + HEX + "a"),
    _invalid("digest-leading-space", "manifestDigest", manifestDigest=" " + DIGEST),
    _invalid("digest-trailing-newline", "manifestDigest", manifestDigest=DIGEST + "\n"),
    _invalid("digest-without-algorithm", "manifestDigest", manifestDigest=HEX),
    _invalid("digest-empty", "manifestDigest", manifestDigest=""),
    _invalid("digest-object", "manifestDigest", manifestDigest={"sha256": HEX}),
    _invalid("digest-number", "manifestDigest", manifestDigest=256),
    _invalid("digest-missing", "manifestDigest", manifestDigest=REMOVE),
    # tag
    _invalid("tag-leading-dot", "tag", tag=".hidden"),
    _invalid("tag-leading-dash", "tag", tag="-rc1"),
    _invalid("tag-129-chars", "tag", tag="a" * 129),
    _invalid("tag-non-ascii", "tag", tag="täg"),
    _invalid("tag-emoji", "tag", tag="release-\N{ROCKET}"),
    _invalid("tag-slash", "tag", tag="v1/beta"),
    _invalid("tag-colon", "tag", tag="v1:beta"),
    _invalid("tag-trailing-space", "tag", tag="test "),
    _invalid("tag-trailing-newline", "tag", tag="test\n"),
    _invalid("tag-empty", "tag", tag=""),
    _invalid("tag-number", "tag", tag=5),
    _invalid("tag-null", "tag", tag=None),
    # repository
    _invalid("repository-one-segment", "repository", repository="busybox"),
    _invalid("repository-three-segments", "repository", repository="quayadmin/team/busybox"),
    _invalid("repository-upper-case", "repository", repository="QuayAdmin/busybox"),
    _invalid("repository-non-ascii", "repository", repository="quayadmin/büsybox"),
    _invalid("repository-leading-space", "repository", repository=" quayadmin/busybox"),
    _invalid("repository-empty-name", "repository", repository="quayadmin/"),
    _invalid("repository-empty", "repository", repository=""),
    _invalid("repository-list", "repository", repository=["quayadmin", "busybox"]),
    _invalid("repository-too-long", "repository", repository="a" * 256 + "/" + "b" * 255),
    # refreshInterval
    _invalid("interval-unknown-unit", "refreshInterval", refreshInterval="5x"),
    _invalid("interval-days", "refreshInterval", refreshInterval="1d"),
    _invalid("interval-negative", "refreshInterval", refreshInterval="-1m"),
    _invalid("interval-too-long", "refreshInterval", refreshInterval="99999h"),
    _invalid("interval-overflow", "refreshInterval", refreshInterval="99999999999999999999h"),
    _invalid("interval-too-short", "refreshInterval", refreshInterval="9s"),
    _invalid("interval-zero-seconds", "refreshInterval", refreshInterval="0s"),
    _invalid("interval-space", "refreshInterval", refreshInterval="5 m"),
    _invalid("interval-empty", "refreshInterval", refreshInterval=""),
    _invalid("interval-number", "refreshInterval", refreshInterval=300),
    # expiration
    _invalid("expiration-no-zone", "expiration", expiration="2027-01-31T00:00:00"),
    _invalid("expiration-date-only", "expiration", expiration="2027-01-31"),
    _invalid("expiration-words", "expiration", expiration="next week"),
    _invalid("expiration-rfc-2822", "expiration", expiration="Sun, 31 Jan 2027 00:00:00 GMT"),
    _invalid("expiration-unix-seconds-text", "expiration", expiration="1800000000"),
    _invalid("expiration-unix-seconds", "expiration", expiration=1800000000),
    _invalid("expiration-space-separator", "expiration", expiration="2027-01-31 00:00:00Z"),
    _invalid("expiration-offset-without-colon", "expiration", expiration="2027-01-31T00:00:00+0900"),
    _invalid("expiration-offset-25-hours", "expiration", expiration="2027-01-31T00:00:00+25:00"),
    _invalid("expiration-no-seconds", "expiration", expiration="2027-01-31T00:00Z"),
    _invalid("expiration-february-30", "expiration", expiration="2027-02-30T00:00:00Z"),
    _invalid("expiration-hour-24", "expiration", expiration="2027-01-31T24:00:00Z"),
    _invalid("expiration-year-10000", "expiration", expiration="10000-01-01T00:00:00Z"),
    _invalid("expiration-empty", "expiration", expiration=""),
    # deletionPolicy
    _invalid("deletion-policy-lower-case", "deletionPolicy", deletionPolicy="delete"),
    _invalid("deletion-policy-unknown", "deletionPolicy", deletionPolicy="Remove"),
    _invalid("deletion-policy-empty", "deletionPolicy", deletionPolicy=""),
    _invalid("deletion-policy-bool", "deletionPolicy", deletionPolicy=True),
    # suspend
    _invalid("suspend-string", "suspend", suspend="true"),
    _invalid("suspend-number", "suspend", suspend=1),
    _invalid("suspend-object", "suspend", suspend={"enabled": True}),
    # connection
    _invalid("connection-string", "connection", connection="https://quay.example.com"),
    _url("url-ftp", "ftp://quay.example.com"),
    _url("url-upper-case-scheme", "HTTPS://quay.example.com"),
    _url("url-no-host", "https://"),
    _url("url-user-info", "https://robot:password@quay.example.com"),
    _url("url-query", "https://quay.example.com/?next=/"),
    _url("url-fragment", "https://quay.example.com/#top"),
    _url("url-space", "https://quay example.com"),
    _url("url-trailing-newline", "https://quay.example.com\n"),
    _url("url-port-zero", "https://quay.example.com:0"),
    _url("url-port-65536", "https://quay.example.com:65536"),
    _url("url-port-six-digits", "https://quay.example.com:443443"),
    _url("url-bad-percent-escape", "https://quay.example.com/%zz"),
    _url("url-ipv4-in-brackets", "http://[127.0.0.1]:8080"),
    _url("url-bad-ipv6", "http://[1:2:3:4:5:6:7:8:9]"),
    _url("url-non-ascii-host", "https://quay.exämple.com"),
    _url("url-empty", ""),
    _url("url-too-long", "https://quay.example.com/" + "a" * 2048),
    _secret_ref("secret-name-upper-case", "tokenSecretRef.name", {"name": "Quay-Token", "key": "token"}),
    _secret_ref("secret-name-underscore", "tokenSecretRef.name", {"name": "quay_token", "key": "token"}),
    _secret_ref("secret-name-leading-dash", "tokenSecretRef.name", {"name": "-quay", "key": "token"}),
    _secret_ref("secret-name-empty", "tokenSecretRef.name", {"name": "", "key": "token"}),
    _secret_ref("secret-name-254-chars", "tokenSecretRef.name", {"name": "a" * 254, "key": "token"}),
    _secret_ref("secret-key-slash", "tokenSecretRef.key", {"name": "quay-token", "key": "a/token"}),
    _secret_ref("secret-key-missing", "tokenSecretRef.key", {"name": "quay-token"}),
    _secret_ref("secret-ref-string", "tokenSecretRef", "quay-token"),
    _invalid(
        "ca-bundle-name-missing",
        "connection.caBundleConfigMapRef.name",
        connection={"caBundleConfigMapRef": {"key": "ca.crt"}},
    ),
    # Unknown fields: `kubectl apply` validates strictly by default, and so does the model.
    _invalid("unknown-top-level-field", "unknownField", unknownField=True),
    _invalid("unknown-misspelled-field", "manifestdigest", manifestdigest=DIGEST),
    _secret_ref("unknown-secret-namespace", "tokenSecretRef.namespace", {"name": "q", "key": "k", "namespace": "x"}),
    _invalid(
        "unknown-connection-field",
        "connection.insecureSkipTLSVerify",
        connection={"url": "https://quay.example.com", "insecureSkipTLSVerify": True},
    ),
)

# Values close to a limit that both the CRD and the model accept.
VALID_EDGE_SPECS: tuple[SpecCase, ...] = (
    SpecCase("tag-128-chars", {"tag": "a" * 128}),
    SpecCase("tag-underscore-first", {"tag": "_internal"}),
    SpecCase("tag-dots-and-dashes", {"tag": "v1.2.3-rc.1"}),
    SpecCase("repository-separators", {"repository": "my-org/app.web_v2"}),
    SpecCase("interval-zero", {"refreshInterval": "0"}),
    SpecCase("interval-minimum", {"refreshInterval": "10s"}),
    SpecCase("interval-minimum-in-ms", {"refreshInterval": "10000ms"}),
    SpecCase("interval-maximum", {"refreshInterval": "168h"}),
    SpecCase("interval-fraction", {"refreshInterval": "1.5h"}),
    SpecCase("interval-repeated-unit", {"refreshInterval": "1h1h"}),
    SpecCase("expiration-utc", {"expiration": "2027-01-31T00:00:00Z"}),
    SpecCase("expiration-lower-case", {"expiration": "2027-01-31t00:00:00z"}),
    SpecCase("expiration-offset", {"expiration": "2027-01-31T09:00:00+09:00"}),
    SpecCase("expiration-offset-maximum", {"expiration": "9999-12-31T23:59:59-23:59"}),
    SpecCase("expiration-nanoseconds", {"expiration": "2027-01-31T00:00:00.123456789Z"}),
    # In the past: valid, and the operator reports ExpirationInPast.
    SpecCase("expiration-year-1", {"expiration": "0001-01-01T00:00:00Z"}),
    SpecCase("suspend-null", {"suspend": None}),
    SpecCase("connection-empty", {"connection": {}}),
    SpecCase("connection-null", {"connection": None}),
    SpecCase("url-ipv6", {"connection": {"url": "http://[::1]:8080/quay"}}),
    SpecCase("url-ipv4-mapped-ipv6", {"connection": {"url": "http://[::ffff:127.0.0.1]:8080"}}),
    SpecCase("url-percent-escape", {"connection": {"url": "https://quay.example.com/a%2Fb"}}),
    SpecCase("url-port-65535", {"connection": {"url": "https://quay.example.com:65535"}}),
    SpecCase("secret-name-253-chars", {"connection": {"tokenSecretRef": {"name": "a" * 253, "key": "t"}}}),
)
