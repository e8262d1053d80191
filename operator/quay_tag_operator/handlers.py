"""kopf handlers: start-up, clean-up and the reconcile triggers. Each one delegates."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import kopf
import kubernetes

from quay_tag_operator.config import OperatorConfig
from quay_tag_operator.controller import Runtime, run_pass
from quay_tag_operator.credentials import KubernetesSecretReader
from quay_tag_operator.models import GROUP, PLURAL, VERSION
from quay_tag_operator.quay.client import QuayClientPool

# Annotations kopf writes on each resource, under the operator's own API group.
ANNOTATION_PREFIX = GROUP


@kopf.on.startup()
async def start(
    settings: kopf.OperatorSettings,
    memo: Any,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **_: Any,
) -> None:
    config = OperatorConfig.from_env()
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"

    timeout = httpx.Timeout(config.request_timeout, connect=min(5.0, config.request_timeout))
    memo.runtime = Runtime(
        config=config,
        quay=QuayClientPool(timeout=timeout),
        secrets=KubernetesSecretReader(_kubernetes_api_client()),
    )
    logger.info(
        "Started with Quay URL %s, token file %s, history limit %d",
        config.quay_url or "(none: each resource sets spec.connection.url)",
        config.token_file or "(none)",
        config.history_limit,
    )


@kopf.on.cleanup()
async def stop(memo: Any, **_: Any) -> None:
    runtime: Runtime | None = getattr(memo, "runtime", None)
    if runtime is not None:
        await runtime.quay.aclose()


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def reconcile_tag(
    body: kopf.Body,
    patch: kopf.Patch,
    memo: Any,
    retry: int,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **_: Any,
) -> None:
    await run_pass(body=body, patch=patch, runtime=memo.runtime, retry=retry, logger=logger)


def _kubernetes_api_client() -> Any:
    # In a pod, the service account; elsewhere, KUBECONFIG or ~/.kube/config, as kopf does.
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return kubernetes.client.ApiClient(configuration)
