"""Kubeconfig files with embedded certificate data."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import yaml

from .certs import CertificateAndKey


def render_kubeconfig(server_url: str, ca_pem: bytes, user: str, client: CertificateAndKey) -> str:
    """Render a kubeconfig whose only context authenticates `user` with a client certificate."""

    def encode(pem: bytes) -> str:
        return base64.b64encode(pem).decode("ascii")

    cluster = "quay-tag-operator-test"
    context = f"{user}@{cluster}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {"server": server_url, "certificate-authority-data": encode(ca_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": encode(client.cert_pem),
                    "client-key-data": encode(client.key_pem),
                },
            }
        ],
        "contexts": [{"name": context, "context": {"cluster": cluster, "user": user}}],
        "current-context": context,
        "preferences": {},
    }
    return yaml.safe_dump(config, sort_keys=False)


def write_kubeconfig_file(path: Path, content: str) -> None:
    """Write a kubeconfig readable only by the owner, because it contains a private key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # O_CREAT sets the mode only on a new file, so an existing one is narrowed too.
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(content)
