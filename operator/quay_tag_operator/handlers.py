"""kopf handlers: start-up, clean-up, the claims index, watch events and deletion.

Each one delegates to controller.py.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import kopf
import kubernetes
import pydantic

from quay_tag_operator import controller, deletion, leadership, metrics
from quay_tag_operator.claims import Claim, ClaimKey, claim_key
from quay_tag_operator.config import OperatorConfig
from quay_tag_operator.credentials import KubernetesSecretReader
from quay_tag_operator.models import GROUP, PLURAL, VERSION, RepositoryTagSpec
from quay_tag_operator.quay.client import QuayClientPool
from quay_tag_operator.status import StatusWriter

# Annotations kopf writes on each resource, under the operator's own API group.
ANNOTATION_PREFIX = GROUP
Logger = logging.Logger | logging.LoggerAdapter[Any]


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: Any, logger: Logger, **_: Any) -> None:
    config = OperatorConfig.from_env()
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.posting.reporting_component = "quay-tag-operator"

    # kopf 1.45 sets settings.peering.clusterwide to False, before start-up handlers run, when given
    # namespaces: the operator's -n, or `kopf run --namespace`. Scanning then goes off, so kopf
    # watches each namespace by its exact name, finds the CRDs once through API discovery, and lists
    # or watches nothing cluster-wide. The namespaced install needs no ClusterRole.
    # NOTE: without scanning, kopf ignores namespace patterns such as `team-*` (the operator's -n
    # rejects them), and it serves a RepositoryTag CRD installed after start-up only after a restart.
    if not settings.peering.clusterwide:
        settings.scanning.disabled = True
    if config.metrics_port is not None:
        try:
            metrics.serve(config.metrics_port, config.metrics_address)
        except OSError as error:
            logger.error("Serving metrics on %s:%d failed: %s", config.metrics_address, config.metrics_port, error)

    api_client = _kubernetes_api_client()
    timeout = httpx.Timeout(config.request_timeout, connect=min(5.0, config.request_timeout))
    memo.runtime = controller.Runtime(
        config=config,
        quay=QuayClientPool(
            timeout=timeout,
            max_concurrent_requests=config.max_concurrent_requests,
            max_requests_per_second=config.max_requests_per_second,
            request_burst=config.request_burst,
        ),
        secrets=KubernetesSecretReader(api_client),
        status_writer=StatusWriter(api_client),
    )

    # Leader election comes after the runtime is built, because the kubernetes client takes about
    # 0.5 s to import its API classes, and a new leader should start kopf without that delay.
    # kopf starts no watch before this handler returns, so a standby replica neither reads nor
    # writes RepositoryTags, and it makes no request to Quay.
    # The Lease gets a client that does not retry a failed connection, so that a renewal never
    # waits behind retries. When kopf retries this handler, the candidate from the failed attempt
    # renews the Lease it holds.
    if config.leader_election:
        elector: leadership.LeaderElector | None = getattr(memo, "leader_elector", None)
        if elector is None:
            elector = leadership.create_elector(config, _kubernetes_api_client(retries=0), logger)
            memo.leader_elector = elector
        await leadership.lead(elector, liveness_endpoint=getattr(memo, "liveness_endpoint", None), logger=logger)
        elector.keep_leading(on_lost=lambda: _stop_leading(memo, logger))
    logger.info(
        "Started with Quay URL %s, token file %s, refresh interval %s, history limit %d",
        config.quay_url or "(none: each resource sets spec.connection.url)",
        config.token_file or "(none)",
        config.refresh_interval,
        config.history_limit,
    )


@kopf.on.cleanup()
async def stop(memo: Any, **_: Any) -> None:
    runtime: controller.Runtime | None = getattr(memo, "runtime", None)
    if runtime is not None:
        await runtime.stop_loops()
    # Released only after the loops have stopped, so that the next leader never overlaps with them.
    elector: leadership.LeaderElector | None = getattr(memo, "leader_elector", None)
    if elector is not None:
        await elector.close()
    if runtime is not None:
        await runtime.quay.aclose()


async def _stop_leading(memo: Any, logger: Logger) -> None:
    """Stop every reconcile loop once the Lease is lost, then make kopf stop, so the pod restarts as a standby."""
    await memo.runtime.stop_loops()
    logger.error("Stopped all reconcile loops after losing the leader election Lease; the operator stops now")
    leadership.request_operator_stop(logger)


def _lost_leadership(memo: Any) -> bool:
    elector: leadership.LeaderElector | None = getattr(memo, "leader_elector", None)
    return elector is not None and not elector.leading


@kopf.index(GROUP, VERSION, PLURAL)
def tag_claims(body: kopf.Body, memo: Any, **_: Any) -> dict[ClaimKey, Claim] | None:
    """Index every resource's claim by Quay server, repository and tag."""
    try:
        spec = RepositoryTagSpec.model_validate(dict(body.spec))
    except pydantic.ValidationError:
        return None
    key = claim_key(spec, memo.runtime.config)
    if key is None:
        return None
    return {key: controller.own_claim(body, spec)}


def _in_shard(meta: kopf.Meta, memo: Any, **_: Any) -> bool:
    # Resources outside the label selector belong to another operator instance. The claims
    # index above still contains them, so conflicts across instances are found.
    selector = memo.runtime.config.selector
    return selector is None or bool(selector.matches(meta.labels))


@kopf.on.event(GROUP, VERSION, PLURAL, when=_in_shard)
async def track_tag(event: kopf.RawEvent, body: kopf.Body, memo: Any, logger: Logger, **kwargs: Any) -> None:
    """Start each resource's reconcile loop, wake it on a new generation, stop it on deletion."""
    # Between losing the Lease and kopf's stop, watch events still arrive; they start no loop.
    if _lost_leadership(memo):
        return
    # kopf passes each index as a keyword argument named after its function.
    claims: kopf.Index[ClaimKey, Claim] = kwargs["tag_claims"]
    controller.observe(
        event_type=event.get("type"),
        body=body,
        runtime=memo.runtime,
        state=controller.tag_state(memo),
        claims=claims,
        logger=logger,
    )


def _deletion_requested(spec: kopf.Spec, meta: kopf.Meta, memo: Any, **_: Any) -> bool:
    return spec.get("deletionPolicy") == "Delete" and _in_shard(meta, memo)


# Attempts at deleting a tag while Quay fails temporarily, 10 s apart.
DELETE_ATTEMPTS = 30


@kopf.on.delete(GROUP, VERSION, PLURAL, when=_deletion_requested, retries=DELETE_ATTEMPTS)
async def delete_tag(body: kopf.Body, memo: Any, logger: Logger, retry: int, **kwargs: Any) -> None:
    if _lost_leadership(memo):
        # Neither delete the tag in Quay nor let kopf remove the finalizer or record a retry:
        # wait until kopf cancels this handler as it stops, and let the next leader delete the tag.
        # NOTE: kopf itself may still add its finalizer to a new resource in this short window.
        await asyncio.Event().wait()
    await deletion.delete_tag(
        body=body,
        runtime=memo.runtime,
        state=controller.tag_state(memo),
        claims=kwargs["tag_claims"],
        logger=logger,
        final_attempt=retry + 1 >= DELETE_ATTEMPTS,
    )


def _kubernetes_api_client(retries: int | None = None) -> Any:
    # In a pod, the service account; elsewhere, KUBECONFIG or ~/.kube/config, as kopf does.
    # retries: urllib3's retries of a failed connection; None keeps urllib3's default of 3.
    configuration = kubernetes.client.Configuration()
    configuration.retries = retries
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return kubernetes.client.ApiClient(configuration)
