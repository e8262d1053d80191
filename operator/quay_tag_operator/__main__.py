"""Command line: ``python -m quay_tag_operator`` or the ``quay-tag-operator`` script."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import kopf

from quay_tag_operator.config import ENV_PREFIX, ConfigError, OperatorConfig


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="quay-tag-operator",
        description="Keep Quay image tags at the digests that RepositoryTag resources declare.",
        epilog=f"Each option may also be given as an environment variable {ENV_PREFIX}<OPTION>, "
        f"for example {ENV_PREFIX}QUAY_URL. The Kubernetes connection comes from the in-cluster "
        "service account or from KUBECONFIG.",
    )
    parser.add_argument("--quay-url", help="Quay server for resources that do not set spec.connection.url")
    parser.add_argument(
        "--token-file",
        help="file with the OAuth access token for resources that do not set spec.connection.tokenSecretRef",
    )
    parser.add_argument("--ca-bundle", help="CA bundle (PEM file) for verifying Quay's TLS certificates")
    parser.add_argument("--history-limit", type=int, help="history rows kept in status, 1 to 100 (default 20)")
    parser.add_argument("--request-timeout", type=float, help="seconds before a Quay request times out (default 10)")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch this namespace (repeatable; default: all)"
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (the default)")
    parser.add_argument("--liveness", metavar="URL", help="health endpoint, such as http://0.0.0.0:8080/healthz")
    parser.add_argument("-v", "--verbose", action="store_true", help="log routine passes too")
    parser.add_argument("--debug", action="store_true", help="log everything, including each Quay request")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    options = {
        "quay_url": args.quay_url,
        "token_file": args.token_file,
        "ca_bundle": args.ca_bundle,
        "history_limit": args.history_limit,
        "request_timeout": args.request_timeout,
    }
    for name, value in options.items():
        if value is not None:
            os.environ[ENV_PREFIX + name.upper()] = str(value)
    try:
        OperatorConfig.from_env()
    except ConfigError as error:
        sys.exit(f"quay-tag-operator: {error}")

    import quay_tag_operator.handlers  # noqa: F401  (registers the handlers with kopf)

    kopf.configure(verbose=args.verbose, debug=args.debug)
    kopf.run(
        standalone=True,
        namespaces=args.namespace,
        clusterwide=not args.namespace,
        liveness_endpoint=args.liveness,
    )


if __name__ == "__main__":
    main()
