"""The Argo CD health check in deploy/argocd/health.lua, run with Lua through lupa."""

from __future__ import annotations

from typing import Any

import lupa
import pytest
import yaml

from quay_tag_operator import reasons

from .conftest import ROOT

HEALTH_LUA = ROOT / "deploy" / "argocd" / "health.lua"
ARGOCD_CM = ROOT / "deploy" / "argocd" / "argocd-cm.yaml"
HEALTH_KEY = "resource.customizations.health.quaytag.dev_RepositoryTag"
SPEC = {"repository": "quayadmin/busybox", "tag": "test", "manifestDigest": "sha256:" + "a" * 64}


def health(body: dict[str, Any]) -> tuple[str, str]:
    """Run health.lua on ``body`` with the object in the global ``obj``, as Argo CD does, and return status and message."""
    runtime = lupa.LuaRuntime()
    runtime.globals().obj = runtime.table_from(body, recursive=True)
    result = runtime.execute(HEALTH_LUA.read_text())
    return str(result["status"]), str(result["message"])


def resource(
    *,
    generation: int = 2,
    observed: int | None = 2,
    ready: str | None = "True",
    reason: str = "InSync",
    condition_generation: int | None = 2,
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "quaytag.dev/v1alpha1",
        "kind": "RepositoryTag",
        "metadata": {"name": "busybox-test", "namespace": "default", "generation": generation},
        "spec": {**SPEC, **spec},
    }
    if observed is None:
        return body
    body["status"] = {"observedGeneration": observed, "conditions": []}
    if ready is not None:
        condition = {
            "type": "Ready",
            "status": ready,
            "reason": reason,
            "message": f"message for {reason}",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
        if condition_generation is not None:
            condition["observedGeneration"] = condition_generation
        body["status"]["conditions"].append(condition)
    return body


CASES = [
    ("in sync", resource(), "Healthy"),
    ("no status yet", resource(observed=None), "Progressing"),
    ("status without conditions", resource(ready=None), "Progressing"),
    ("observedGeneration lags", resource(observed=1, condition_generation=1), "Progressing"),
    ("condition generation lags", resource(condition_generation=1), "Progressing"),
    ("condition without generation", resource(condition_generation=None), "Progressing"),
    ("quay unavailable", resource(ready="False", reason="QuayUnavailable"), "Progressing"),
    ("rate limited", resource(ready="False", reason="RateLimited"), "Progressing"),
    ("invalid response", resource(ready="False", reason="InvalidQuayResponse"), "Progressing"),
    ("image not pushed", resource(ready="False", reason="ManifestNotFound"), "Progressing"),
    ("token rejected", resource(ready="False", reason="Unauthorized"), "Degraded"),
    ("conflict", resource(ready="False", reason="Conflict"), "Degraded"),
    ("ready unknown", resource(ready="Unknown", reason="Unknown"), "Progressing"),
    ("suspended in sync", resource(reason="Suspended", suspend=True), "Suspended"),
    ("suspended out of sync", resource(ready="False", reason="Suspended", suspend=True), "Suspended"),
    ("suspended before status", resource(observed=None, suspend=True), "Suspended"),
    ("suspend false", resource(suspend=False), "Healthy"),
]


@pytest.mark.parametrize(("body", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_health_status(body: dict[str, Any], expected: str) -> None:
    status, _ = health(body)

    assert status == expected


def test_health_message_names_reason() -> None:
    _, message = health(resource(ready="False", reason="Forbidden"))

    assert message == "Forbidden: message for Forbidden"


def test_health_message_names_lagging_generation() -> None:
    _, message = health(resource(generation=5, observed=4))

    assert "generation 5" in message


@pytest.mark.parametrize("reason", reasons.ALL, ids=lambda reason: f"{reason.name}-{reason.ready}")
def test_every_reason_classified(reason: reasons.Reason) -> None:
    body = resource(ready="True" if reason.ready else "False", reason=reason.name)

    status, _ = health(body)

    if reason.ready:
        assert status == "Healthy"
    elif reason.transient:
        assert status == "Progressing"
    else:
        assert status == "Degraded"


def test_argocd_cm_embeds_health_lua() -> None:
    config_map = yaml.safe_load(ARGOCD_CM.read_text())

    assert config_map["data"][HEALTH_KEY] == HEALTH_LUA.read_text()


def test_application_example_is_complete() -> None:
    application = yaml.safe_load((ROOT / "deploy" / "argocd" / "application.yaml").read_text())

    assert application["kind"] == "Application"
    assert application["spec"]["source"]["path"]
    assert application["spec"]["destination"]["namespace"]
