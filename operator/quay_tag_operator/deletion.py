"""Deletion of the Quay tag when a RepositoryTag with deletionPolicy Delete goes away."""

from __future__ import annotations

import datetime
import ssl
from collections.abc import Iterable, Mapping

import kopf
import pydantic

from quay_tag_operator import reporting
from quay_tag_operator.claims import Claim, ClaimKey, claim_key
from quay_tag_operator.controller import Logger, Runtime, TagState, invalid_spec_message
from quay_tag_operator.credentials import CredentialsError, resolve_connection
from quay_tag_operator.models import RepositoryTagSpec
from quay_tag_operator.quay import errors
from quay_tag_operator.reconcile import failure_outcome


async def delete_tag(
    *,
    body: kopf.Body,
    runtime: Runtime,
    state: TagState,
    claims: Mapping[ClaimKey, Iterable[Claim]],
    logger: Logger,
    final_attempt: bool = False,
) -> None:
    """Delete the tag in Quay for a resource with deletionPolicy Delete, if it still points at our digest.

    Anything else (the tag moved, Quay rejects the delete, the spec is invalid, the
    resource is suspended) leaves the tag and lets the resource go, with an Event that
    gives the reason. Only temporary Quay failures are retried, through kopf's handler
    retries; on the ``final_attempt`` such a failure leaves the tag too.
    """
    try:
        spec = RepositoryTagSpec.model_validate(dict(body.spec))
    except pydantic.ValidationError as error:
        reporting.report_tag_left(body, logger, f"The tag was left in Quay because the spec is invalid: {invalid_spec_message(error)}")
        return

    if spec.suspend:
        # Suspend turns every write to Quay off, and deleting the tag is one.
        reporting.report_tag_left(
            body, logger, f"Tag {spec.tag} of {spec.repository} was left in Quay because the resource is suspended."
        )
        return

    key = claim_key(spec, runtime.config)
    others = [claim for claim in claims.get(key, ()) if claim.uid != body.metadata.uid] if key else []
    if others:
        holder = min(others)
        reporting.report_tag_left(
            body,
            logger,
            f"Tag {spec.tag} of {spec.repository} was left in Quay because RepositoryTag "
            f"{holder.namespace}/{holder.name} also declares it.",
        )
        return

    async with state.lock:
        try:
            connection = await resolve_connection(
                spec, body.metadata.namespace or "", runtime.config, runtime.secrets
            )
        except CredentialsError as error:
            reporting.report_tag_left(body, logger, f"Tag {spec.tag} of {spec.repository} was left in Quay: {error.message}")
            return

        try:
            quay = runtime.quay.client(connection.url, connection.token, ca_bundle=connection.ca_bundle)
        except ssl.SSLError as error:
            reporting.report_tag_left(body, logger, f"Tag {spec.tag} of {spec.repository} was left in Quay: loading the CA bundle failed: {error}")
            return
        namespace, name = spec.namespace_and_name
        try:
            history = await quay.list_tag_history(namespace, name, spec.tag, stop_when=lambda rows: True)
            alive = history.alive_row(datetime.datetime.now(datetime.UTC).timestamp())
            if alive is None:
                logger.info("Tag %s of %s has no alive row; nothing to delete", spec.tag, spec.repository)
                return
            if alive.manifest_digest != spec.manifest_digest:
                reporting.report_tag_left(
                    body,
                    logger,
                    f"Tag {spec.tag} of {spec.repository} was left in Quay because it points at "
                    f"{alive.manifest_digest}, not at {spec.manifest_digest} that this resource set.",
                )
                return
            await quay.delete_tag(namespace, name, spec.tag)
        except errors.QuayNotFound:
            logger.info("Tag %s of %s is already gone from Quay", spec.tag, spec.repository)
            return
        except errors.QuayError as error:
            if error.temporary and not final_attempt:
                raise kopf.TemporaryError(f"Deleting the tag failed: {error.message}", delay=10) from None
            outcome = failure_outcome(error, spec, token_source=connection.token_source, history=None)
            reporting.report_tag_left(body, logger, f"Tag {spec.tag} of {spec.repository} was left in Quay: {outcome.message}")
            return

    message = f"Deleted tag {spec.tag} of {spec.repository} ({spec.manifest_digest}) because deletionPolicy is Delete."
    logger.info(message)
    kopf.info(body, reason="TagDeleted", message=message)
