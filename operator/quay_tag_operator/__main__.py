"""Command line: ``python -m quay_tag_operator`` or the ``quay-tag-operator`` script."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence

import kopf
import kubernetes

from quay_tag_operator.config import ENV_PREFIX, ConfigError, OperatorConfig

# Libraries that log every request at INFO or DEBUG; they speak only with --debug.
NOISY_LOGGERS = ("httpx", "httpcore", "urllib3", "kubernetes", "aiohttp")

# A namespace name is an RFC 1123 label.
NAMESPACE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")

# Options that the operator's settings read from QUAY_TAG_OPERATOR_<NAME> as well.
SETTING_OPTIONS = (
    "quay_url",
    "token_file",
    "ca_bundle",
    "allowed_hosts",
    "refresh_interval",
    "history_limit",
    "request_timeout",
    "max_concurrent_requests",
    "max_requests_per_second",
    "request_burst",
    "label_selector",
    "metrics_port",
    "metrics_address",
    "leader_election",
    "leader_election_namespace",
    "leader_election_id",
    "leader_election_lease_duration",
    "leader_election_renew_deadline",
    "leader_election_retry_period",
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    variables = ", ".join(ENV_PREFIX + name.upper() for name in SETTING_OPTIONS)
    parser = argparse.ArgumentParser(
        prog="quay-tag-operator",
        description="Keep Quay image tags at the digests that RepositoryTag resources declare.",
        epilog=f"Every option that sets an operator setting can also be set as an environment variable: "
        f"{variables}. The Kubernetes connection comes from the in-cluster service account or from KUBECONFIG.",
    )

    parser.add_argument("--quay-url", help="Quay server for resources that do not set spec.connection.url")
    parser.add_argument(
        "--token-file",
        help="file with the OAuth access token for resources that do not set spec.connection.tokenSecretRef",
    )
    parser.add_argument("--ca-bundle", help="CA bundle (PEM file) for verifying Quay's TLS certificates")
    parser.add_argument(
        "--allowed-hosts",
        help="comma-separated Quay hosts (host or host:port, * for any) that spec.connection.url may name, "
        "besides the host of --quay-url",
    )
    parser.add_argument(
        "--refresh-interval", help="default re-read interval, such as 5m; 0 turns periodic checks off (default 5m)"
    )

    parser.add_argument("--history-limit", type=int, help="history rows kept in status, 1 to 100 (default 20)")
    parser.add_argument("--request-timeout", type=float, help="seconds before a Quay request times out (default 10)")
    parser.add_argument(
        "--max-concurrent-requests", type=int, help="requests in flight to one Quay server at most (default 8)"
    )
    parser.add_argument(
        "--max-requests-per-second",
        type=float,
        help="average requests per second to one Quay server; 0 sets no limit (default 5, as Quay's nginx allows)",
    )
    parser.add_argument(
        "--request-burst", type=int, help="requests to one Quay server that may start at once above that rate (default 25)"
    )
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus metrics at /metrics on this port (default: off)")
    parser.add_argument("--metrics-address", help="address the metrics endpoint listens on (default 0.0.0.0)")

    # default=None, not False, so that an absent flag leaves QUAY_TAG_OPERATOR_LEADER_ELECTION alone.
    parser.add_argument(
        "--leader-election",
        action="store_true",
        default=None,
        help="reconcile only while holding a coordination.k8s.io Lease, so that several replicas can run; "
        "the others stand by until the Lease is released or expires",
    )
    parser.add_argument(
        "--leader-election-namespace",
        help="namespace of the Lease (default: the pod's service account namespace; required outside a pod)",
    )
    parser.add_argument("--leader-election-id", help="name of the Lease (default quay-tag-operator)")
    parser.add_argument(
        "--leader-election-lease-duration",
        help="whole seconds that standby replicas wait after the last renewal before they take the Lease over, "
        "such as 15s (default 15s)",
    )
    parser.add_argument(
        "--leader-election-renew-deadline",
        help="how long the leader retries a failed renewal before it stops, shorter than the lease duration "
        "(default 10s)",
    )
    parser.add_argument(
        "--leader-election-retry-period",
        help="time between attempts to acquire or renew the Lease, shorter than the renew deadline (default 2s)",
    )

    parser.add_argument(
        "-l",
        "--label-selector",
        help="reconcile only RepositoryTags with matching labels, such as shard=a or team,!legacy "
        "(equality-based, as kubectl -l; default: all)",
    )

    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        type=namespace_name,
        help="watch this namespace, given by its exact name (repeatable; default: all)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (the default)")

    parser.add_argument("--liveness", metavar="URL", help="health endpoint, such as http://0.0.0.0:8080/healthz")
    parser.add_argument("-v", "--verbose", action="store_true", help="log routine passes of each resource too")
    parser.add_argument("--debug", action="store_true", help="log everything, including each HTTP request")
    parser.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="log lines as text (default) or JSON objects"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    for name in SETTING_OPTIONS:
        value = getattr(args, name)
        if value is not None:
            os.environ[ENV_PREFIX + name.upper()] = str(value)
    try:
        OperatorConfig.from_env()
    except ConfigError as error:
        sys.exit(f"quay-tag-operator: {error}")
    check_kubernetes_config()

    import quay_tag_operator.handlers  # noqa: F401  (registers the handlers with kopf)

    configure_logging(verbose=args.verbose, debug=args.debug, json_lines=args.log_format == "json")
    # The startup handler serves the liveness URL itself while it waits for the leader election Lease.
    memo = kopf.Memo(liveness_endpoint=args.liveness)
    kopf.run(
        standalone=True,
        namespaces=args.namespace,
        clusterwide=not args.namespace,
        liveness_endpoint=args.liveness,
        memo=memo,
    )
    elector = memo.get("leader_elector")
    if elector is not None and elector.lost:
        sys.exit("quay-tag-operator: stopped after losing the leader election Lease; restart to stand by again")


def namespace_name(value: str) -> str:
    """Check that a -n value is a namespace name, because kopf matches only exact names once scanning is off."""
    if NAMESPACE_NAME.fullmatch(value) is None:
        raise argparse.ArgumentTypeError(
            f"invalid namespace name {value!r}: give the exact name (lower-case letters, digits and '-', "
            "at most 63 characters); patterns such as team-* are not supported"
        )
    return value


def configure_logging(*, verbose: bool, debug: bool, json_lines: bool = False) -> None:
    """Log each line with the resource it concerns; keep HTTP libraries quiet unless debugging."""
    log_format = kopf.LogFormat.JSON if json_lines else kopf.LogFormat.FULL
    kopf.configure(debug=debug, verbose=verbose, log_format=log_format, log_prefix=True)
    if debug:
        return
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def check_kubernetes_config() -> None:
    """Exit with one line when there is no way to reach Kubernetes, instead of retrying forever."""
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        try:
            kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
        except (kubernetes.config.ConfigException, OSError) as error:
            sys.exit(
                f"quay-tag-operator: no Kubernetes configuration ({error}). Set KUBECONFIG, or run the operator "
                "in a pod with a service account."
            )


if __name__ == "__main__":
    main()
