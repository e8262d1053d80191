"""Resolve a resource's Quay URL, token and TLS setting.

A token comes from a Secret in the resource's own namespace (never another)
or from the operator's token file. Both are read on every reconcile, so a
created, restored or rotated credential takes effect without a restart.
Tokens live only in ``Connection.token``, which is left out of its repr.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import kubernetes

from quay_tag_operator import reasons
from quay_tag_operator.config import OperatorConfig
from quay_tag_operator.models import Connection as ConnectionSpec
from quay_tag_operator.models import RepositoryTagSpec
from quay_tag_operator.quay.client import CABundle, is_valid_token
from quay_tag_operator.urls import Origin, origin


class CredentialsError(Exception):
    """The connection cannot be resolved; ``reason`` is the Ready reason to report."""

    def __init__(self, reason: reasons.Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Connection:
    url: str
    token: str = field(repr=False)
    # Description of the token's source for messages, never the token itself.
    token_source: str
    # None verifies TLS against the system's CAs.
    ca_bundle: CABundle | None = None


# A Secret must carry this label, set to "true", before the operator sends its value to
# Quay. Without it, anyone allowed to create a RepositoryTag could have the operator
# send any Secret of the namespace to a Quay server as a token.
TOKEN_SECRET_LABEL = "quaytag.dev/token"


@dataclass(frozen=True)
class StoredData:
    """The data and labels of a Secret (base64-encoded values) or a ConfigMap."""

    data: Mapping[str, str] = field(repr=False)
    labels: Mapping[str, str]


class SecretReader(Protocol):
    async def read(self, namespace: str, name: str) -> StoredData | None:
        """Return the Secret's data and labels, or None when it does not exist."""
        ...

    async def read_config_map(self, namespace: str, name: str) -> StoredData | None:
        """Return the ConfigMap's data and labels, or None when it does not exist."""
        ...


class KubernetesSecretReader:
    """Reads Secrets and ConfigMaps through the ``kubernetes`` client, because kopf has no API for them."""

    def __init__(self, api_client: Any) -> None:
        self._core = kubernetes.client.CoreV1Api(api_client)

    async def read(self, namespace: str, name: str) -> StoredData | None:
        return await self._read_data(self._core.read_namespaced_secret, "Secret", reasons.SECRET_NOT_FOUND, namespace, name)

    async def read_config_map(self, namespace: str, name: str) -> StoredData | None:
        return await self._read_data(
            self._core.read_namespaced_config_map, "ConfigMap", reasons.INVALID_CA_BUNDLE, namespace, name
        )

    @staticmethod
    async def _read_data(
        read: Callable[[str, str], Any], kind: str, reason: reasons.Reason, namespace: str, name: str
    ) -> StoredData | None:
        # The client is synchronous, so it runs in a thread to keep kopf's event loop free.
        try:
            found = await asyncio.to_thread(read, name, namespace)
        except kubernetes.client.ApiException as error:
            if error.status == 404:
                return None
            raise CredentialsError(
                reason,
                f'Reading {kind} "{name}" in namespace "{namespace}" failed with {error.status} '
                f"{error.reason}. Check that the operator may get {kind}s in this namespace.",
            ) from None
        data = {key: str(value) for key, value in (found.data or {}).items()}
        return StoredData(data=data, labels=dict(found.metadata.labels or {}))


async def resolve_connection(
    spec: RepositoryTagSpec,
    namespace: str,
    config: OperatorConfig,
    secrets: SecretReader,
) -> Connection:
    """Combine the resource's connection with the operator's defaults."""
    connection = spec.connection
    url = connection.url if connection is not None and connection.url else config.quay_url
    if url is None:
        raise CredentialsError(
            reasons.MISSING_CONNECTION,
            "No Quay URL: set spec.connection.url, or start the operator with --quay-url.",
        )

    check_host_allowed(url, config)
    ca_bundle = await _resolve_ca_bundle(connection, namespace, config, secrets)
    reference = connection.token_secret_ref if connection is not None else None
    if reference is not None:
        secret = await secrets.read(namespace, reference.name)
        source = f'Secret "{reference.name}" key "{reference.key}" in namespace "{namespace}"'
        if secret is None:
            raise CredentialsError(
                reasons.SECRET_NOT_FOUND,
                f'Secret "{reference.name}" is not found in namespace "{namespace}". Create it with the '
                f'OAuth access token under key "{reference.key}" and the label {TOKEN_SECRET_LABEL}=true.',
            )
        if secret.labels.get(TOKEN_SECRET_LABEL) != "true":
            raise CredentialsError(
                reasons.SECRET_NOT_LABELED,
                f'Secret "{reference.name}" in namespace "{namespace}" lacks the label {TOKEN_SECRET_LABEL}=true, '
                "so the operator does not send its value to Quay. Label the Secret that holds the token.",
            )
        token = _decode_token(secret.data.get(reference.key))
        if token is None:
            raise CredentialsError(
                reasons.SECRET_KEY_NOT_FOUND,
                f'Secret "{reference.name}" in namespace "{namespace}" has no key "{reference.key}" with a valid '
                "token. Put the OAuth access token under that key: one line of printable ASCII, no spaces.",
            )
        return Connection(url=url, token=token, token_source=source, ca_bundle=ca_bundle)

    if config.token_file is None:
        raise CredentialsError(
            reasons.MISSING_CONNECTION,
            "No Quay token: set spec.connection.tokenSecretRef, or start the operator with --token-file.",
        )
    token = _read_operator_file(config.token_file, reasons.TOKEN_FILE_UNREADABLE, "token file")
    if not is_valid_token(token):
        raise CredentialsError(
            reasons.TOKEN_FILE_UNREADABLE,
            f"The operator's token file {config.token_file} does not hold one token: it must be one line of "
            "printable ASCII without spaces.",
        )
    return Connection(url=url, token=token, token_source="the operator's token file", ca_bundle=ca_bundle)


async def _resolve_ca_bundle(
    connection: ConnectionSpec | None, namespace: str, config: OperatorConfig, readers: SecretReader
) -> CABundle | None:
    # The resource's own ConfigMap first, then the operator's file, else the system's CAs.
    reference = connection.ca_bundle_config_map_ref if connection is not None else None
    if reference is not None:
        source = f'ConfigMap "{reference.name}" key "{reference.key}" in namespace "{namespace}"'
        config_map = await readers.read_config_map(namespace, reference.name)
        pem = config_map.data.get(reference.key, "").strip() if config_map is not None else ""
        if not pem:
            raise CredentialsError(
                reasons.INVALID_CA_BUNDLE,
                f"{source} is missing or empty. Put the PEM CA certificates that sign Quay's certificate there.",
            )
        return CABundle(pem=pem, source=source)

    if config.ca_bundle is None:
        return None
    pem = _read_operator_file(config.ca_bundle, reasons.INVALID_CA_BUNDLE, "CA bundle")
    if not pem:
        raise CredentialsError(reasons.INVALID_CA_BUNDLE, f"The operator's CA bundle {config.ca_bundle} is empty.")
    return CABundle(pem=pem, source=f"the operator's CA bundle {config.ca_bundle}")


def check_host_allowed(url: str, config: OperatorConfig) -> None:
    """Raise CredentialsError unless the URL's origin is the default Quay server's or on the allow-list.

    An origin is scheme, host and port, so another port or plain http on the default
    host is refused too: the operator sends tokens to these servers. Link-local
    addresses (cloud metadata services live there) are refused even when listed.
    """
    try:
        target = origin(url)
    except ValueError as error:
        raise CredentialsError(reasons.HOST_NOT_ALLOWED, f"{error}.") from None
    try:
        address = ipaddress.ip_address(target.host)
    except ValueError:
        address = None
    if address is not None and address.is_link_local:
        raise CredentialsError(
            reasons.HOST_NOT_ALLOWED,
            f"Quay URL {target} points at a link-local address, which the operator never contacts.",
        )

    if config.quay_url is not None and origin(config.quay_url) == target:
        return
    if any(_allows(entry, target) for entry in config.allowed_hosts):
        return
    raise CredentialsError(
        reasons.HOST_NOT_ALLOWED,
        f"Quay server {target} is not on the operator's allow-list. Use the default Quay server, or ask "
        "the operator's administrator to add it to --allowed-hosts.",
    )


def _allows(entry: str, target: Origin) -> bool:
    # Entries: "*" (any https server), "host" (https on 443), "host:port", "host:*" (https on any
    # port), and "http://host:port" or "https://host:port" for one exact origin.
    if entry == "*":
        return target.scheme == "https"
    if "://" in entry:
        try:
            return origin(entry) == target
        except ValueError:
            return False
    # An IPv6 address needs the URL form, such as https://[fd00::1]:8443.
    host, separator, port = entry.partition(":")
    if target.scheme != "https" or host != target.host:
        return False
    if not separator:
        return target.port == 443
    return port == "*" or port == str(target.port)


def _read_operator_file(path: Path, reason: reasons.Reason, description: str) -> str:
    # Read on every pass, so that a rotated file takes effect without a restart. The error
    # names only its type: the text of a decoding error could quote the file's content.
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise CredentialsError(
            reason, f"Reading the operator's {description} {path} failed: {type(error).__name__}."
        ) from None


def _decode_token(encoded: str | None) -> str | None:
    if not encoded:
        return None
    try:
        token = base64.b64decode(encoded, validate=True).decode("utf-8").strip()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return token if is_valid_token(token) else None

