"""kubectl helpers for end-to-end tests."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
import yaml
from kopf.testing import KopfRunner

from quay_tag_testing.controlplane.server import ControlPlane
from quay_tag_testing.quay_double.runner import QuayDouble


def digest(label: str) -> str:
    """Return a valid, made-up sha256 digest that is stable for ``label``."""
    return "sha256:" + hashlib.sha256(label.encode()).hexdigest()


def tag_rows(quay: QuayDouble, repository: str) -> list[dict[str, Any]]:
    """Return every tag row of a repository in the double, as its admin API's state lists them."""
    state: Any = quay.state()
    for entry in state["repositories"]:
        if entry["repository"] == repository:
            rows: list[dict[str, Any]] = entry["tags"]
            return rows
    raise AssertionError(f"the double has no repository {repository}")


@contextlib.contextmanager
def run_operator(settings: Mapping[str, str]) -> Iterator[KopfRunner]:
    """Run the operator under KopfRunner with QUAY_TAG_OPERATOR_<NAME> set from ``settings``.

    The runner's output can be read only after the block ends, when the operator has stopped.
    """
    with pytest.MonkeyPatch.context() as patch:
        for name, value in settings.items():
            patch.setenv(f"QUAY_TAG_OPERATOR_{name}", value)
        args = ["run", "--all-namespaces", "--standalone", "--verbose", "-m", "quay_tag_operator.handlers"]
        with KopfRunner(args, timeout=60) as runner:
            yield runner
    assert runner.exception is None, runner.output
    assert runner.exit_code == 0, runner.output


class Cluster:
    """kubectl helpers bound to one control plane and one namespace."""

    def __init__(self, plane: ControlPlane, namespace: str) -> None:
        self.plane = plane
        self.namespace = namespace

    def apply(self, manifest: dict[str, Any]) -> None:
        self.plane.kubectl("apply", "-n", self.namespace, "-f", "-", input=yaml.safe_dump(manifest))

    def apply_tag(self, name: str, repository: str, tag: str, manifest_digest: str, **spec: Any) -> None:
        self.apply(repository_tag(name, repository, tag, manifest_digest, **spec))

    def get(self, name: str) -> dict[str, Any]:
        output = self.plane.kubectl("get", "repositorytag", name, "-n", self.namespace, "-o", "json").stdout
        result: dict[str, Any] = json.loads(output)
        return result

    def wait_for(
        self, name: str, check: Callable[[dict[str, Any]], bool], *, timeout: float = 60.0
    ) -> dict[str, Any]:
        """Poll the resource until ``check`` passes, and return it; fail with its last state."""
        deadline = time.monotonic() + timeout
        while True:
            body = self.get(name)
            if check(body):
                return body
            if time.monotonic() > deadline:
                pytest.fail(f"RepositoryTag {name} did not reach the expected state in {timeout}s: "
                            f"{json.dumps(body.get('status'), indent=2)}")
            time.sleep(0.3)

    def events(self, name: str) -> list[dict[str, Any]]:
        output = self.plane.kubectl(
            "get", "events", "-n", self.namespace, "--field-selector", f"involvedObject.name={name}", "-o", "json"
        ).stdout
        items: list[dict[str, Any]] = json.loads(output)["items"]
        return items

    def wait_for_event(self, name: str, reason: str, *, timeout: float = 30.0) -> dict[str, Any]:
        """Poll the Events of the resource until one has ``reason``, and return it."""
        deadline = time.monotonic() + timeout
        while True:
            matching = [event for event in self.events(name) if event["reason"] == reason]
            if matching:
                return matching[-1]
            if time.monotonic() > deadline:
                reasons = sorted({event["reason"] for event in self.events(name)})
                pytest.fail(f"No {reason} Event for {name} in {timeout}s; Events have reasons {reasons}")
            time.sleep(0.3)


def repository_tag(name: str, repository: str, tag: str, manifest_digest: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "quaytag.dev/v1alpha1",
        "kind": "RepositoryTag",
        "metadata": {"name": name},
        "spec": {"repository": repository, "tag": tag, "manifestDigest": manifest_digest, **spec},
    }


def ready(body: dict[str, Any]) -> dict[str, Any] | None:
    for condition in body.get("status", {}).get("conditions", []):
        if condition["type"] == "Ready":
            result: dict[str, Any] = condition
            return result
    return None


def ready_with(status: str, reason: str, generation: int | None = None) -> Callable[[dict[str, Any]], bool]:
    def check(body: dict[str, Any]) -> bool:
        condition = ready(body)
        if condition is None or condition["status"] != status or condition["reason"] != reason:
            return False
        desired = generation if generation is not None else body["metadata"]["generation"]
        return bool(body["status"].get("observedGeneration") == desired)

    return check
