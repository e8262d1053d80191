"""Benchmark: many RepositoryTags against the Quay test double, next to a sequential script.

Run from the repository root inside the virtualenv:

    .venv/bin/python bench/run.py [--resources 1000] [--repositories 10] [--latency 0.02]

It starts a local control plane, the Quay test double with the given latency per
request, and the operator as a separate process. Then it prints each figure:
time to Ready for all new resources, Quay requests per new resource, one idle
refresh cycle (Quay requests, Quay writes, Kubernetes writes), drift correction,
the operator's peak RSS and CPU. A plain sequential script does the same work
with one HTTP client for comparison. Nothing here is a test; it only measures and prints.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from quay_tag_testing.controlplane.build import ensure_binaries
from quay_tag_testing.controlplane.process import ManagedProcess
from quay_tag_testing.controlplane.server import ControlPlane
from quay_tag_testing.quay_double.runner import QuayDouble

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"
NAMESPACE = "bench"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--resources", type=int, default=1000, help="RepositoryTags to create (default 1000)")
    parser.add_argument("--repositories", type=int, default=10, help="Quay repositories they spread over (default 10)")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds the double adds to each request")
    parser.add_argument("--refresh", type=float, default=30.0, help="refresh interval of the operator, in seconds")
    parser.add_argument("--drift", type=int, default=50, help="tags to move by hand for the drift figure")
    parser.add_argument(
        "--max-concurrent-requests", type=int, default=8, help="the operator's limit of requests in flight (default 8)"
    )
    parser.add_argument(
        "--max-requests-per-second",
        type=float,
        default=0,
        help="the operator's limit of requests per second; 0 (the default here) sets none, the operator's own default is 5",
    )
    parser.add_argument("--request-burst", type=int, default=25, help="the operator's burst above that rate (default 25)")
    return parser.parse_args()


def digest(label: str) -> str:
    return "sha256:" + hashlib.sha256(label.encode()).hexdigest()


def seed(repositories: int) -> dict[str, Any]:
    return {
        "namespaces": [{"name": "bench"}],
        "users": [{"name": "bench"}],
        "tokens": [{"token": TOKEN, "user": "bench", "scopes": ["repo:read", "repo:write"]}],
        "repositories": [
            {
                "name": f"bench/repo-{index}",
                "manifests": [{"digest": digest(f"old-{index}")}, {"digest": digest(f"new-{index}")}],
                "tags": [
                    {"name": "old", "digest": digest(f"old-{index}")},
                    {"name": "new", "digest": digest(f"new-{index}")},
                ],
            }
            for index in range(repositories)
        ],
    }


def resource(index: int, repositories: int) -> dict[str, Any]:
    repository = index % repositories
    return {
        "apiVersion": "quaytag.dev/v1alpha1",
        "kind": "RepositoryTag",
        "metadata": {"name": f"tag-{index}", "namespace": NAMESPACE},
        "spec": {"repository": f"bench/repo-{repository}", "tag": f"t{index}", "manifestDigest": digest(f"new-{repository}")},
    }


def list_resources(plane: ControlPlane) -> list[dict[str, Any]]:
    output = plane.kubectl("get", "repositorytags", "-n", NAMESPACE, "-o", "json", timeout=120).stdout
    items: list[dict[str, Any]] = json.loads(output)["items"]
    return items


def ready_count(plane: ControlPlane) -> int:
    # The table output comes from the API server's printer columns (NAME REPOSITORY TAG READY ...), so
    # polling sends one short row per resource instead of every full object, and costs the run little.
    output = plane.kubectl("get", "repositorytags", "-n", NAMESPACE, "--no-headers", timeout=120).stdout
    return sum(1 for line in output.splitlines() if line.split()[3:4] == ["True"])


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.5) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise SystemExit(f"timed out after {timeout} s")
        time.sleep(interval)
    return time.monotonic() - started


def process_figures(pid: int) -> tuple[int, float]:
    """Return the process's peak RSS in bytes and its CPU seconds so far."""
    peak = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    return peak, cpu


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """Return the CPU seconds a process has used, with its waited-for children when ``children`` is set."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def control_plane_pids(plane: ControlPlane) -> dict[str, int]:
    """Return the pids of the control plane's etcd and kube-apiserver, found by their work folder."""
    pids = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(plane.workdir).encode() in b" ".join(command):
            name = Path(command[0].decode(errors="replace")).name
            if name in ("etcd", "kube-apiserver"):
                pids[name] = int(entry.name)
    return pids


def machine_cpu(plane: ControlPlane, operator_pid: int) -> dict[str, float]:
    """Return CPU seconds so far of the operator, etcd, kube-apiserver and this process (the double, kubectl)."""
    figures = {name: cpu_seconds(pid) for name, pid in control_plane_pids(plane).items()}
    figures["operator"] = cpu_seconds(operator_pid)
    figures["double and kubectl"] = cpu_seconds(os.getpid(), children=True)
    return figures


def sequential_script(url: str, targets: list[tuple[str, str, str]]) -> float:
    """Bring each tag to its digest as a CI job would: read, then PUT when different. Return seconds."""
    started = time.monotonic()
    with httpx.Client(base_url=f"{url}/api/v1/", headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        for repository, tag, desired in targets:
            page = client.get(f"repository/{repository}/tag/", params={"specificTag": tag, "onlyActiveTags": "true"})
            rows = page.json()["tags"]
            if not rows or rows[0]["manifest_digest"] != desired:
                client.put(f"repository/{repository}/tag/{tag}", json={"manifest_digest": desired})
    return time.monotonic() - started


@contextlib.contextmanager
def operator_process(plane: ControlPlane, quay_url: str, args: argparse.Namespace) -> Iterator[ManagedProcess]:
    token_file = plane.workdir / "token"
    token_file.write_text(TOKEN)
    os.environ["KUBECONFIG"] = str(plane.kubeconfig_path)
    command = [
        sys.executable, "-m", "quay_tag_operator", "--quay-url", quay_url, "--token-file", str(token_file),
        "--refresh-interval", f"{args.refresh:g}s", "--history-limit", "5",
        "--max-concurrent-requests", str(args.max_concurrent_requests),
        "--max-requests-per-second", f"{args.max_requests_per_second:g}",
        "--request-burst", str(args.request_burst),
    ]
    operator = ManagedProcess("operator", command, plane.workdir / "operator.log")
    operator.start()
    try:
        yield operator
    finally:
        operator.stop(10)


def report(name: str, value: str, note: str = "") -> None:
    print(f"{name:<48} {value:>14}  {note}", flush=True)


def peak_per_second(arrivals: list[float]) -> int:
    """Return the most requests that arrived within any one second."""
    arrivals = sorted(arrivals)
    peak = 0
    end = 0
    for start_index, start in enumerate(arrivals):
        while end < len(arrivals) and arrivals[end] < start + 1.0:
            end += 1
        peak = max(peak, end - start_index)
    return peak


def convergence_bound(args: argparse.Namespace, requests: int) -> float:
    """Return the least time ``requests`` can take under the latency, concurrency and rate limits."""
    bound = requests * args.latency / args.max_concurrent_requests
    if args.max_requests_per_second > 0:
        bound = max(bound, (requests - args.request_burst) / args.max_requests_per_second)
    return bound


def listing_pages(quay: QuayDouble) -> int:
    """Return the pages of 100 it takes to list every repository's alive tags once."""
    pages = 0
    for entry in quay.state()["repositories"]:  # type: ignore[union-attr]
        alive = sum(1 for row in entry["tags"] if row["alive"])  # type: ignore[index]
        pages += max(1, -(-alive // 100))
    return pages


def main() -> None:
    args = parse_args()
    count, repositories = args.resources, args.repositories
    print(f"{count} resources over {repositories} repositories, {args.latency * 1000:.0f} ms per Quay request")
    rate = f"{args.max_requests_per_second:g}/s, burst {args.request_burst}" if args.max_requests_per_second else "no limit"
    print(f"operator limits: {args.max_concurrent_requests} requests in flight, rate {rate}, refresh {args.refresh:g} s")

    with ControlPlane(ensure_binaries()) as plane, QuayDouble(seed(repositories)) as quay:
        plane.kubectl("apply", "-f", str(ROOT / "crds"))
        plane.kubectl("wait", "--for=condition=Established", "crd/repositorytags.quaytag.dev", "--timeout=60s")
        plane.kubectl("create", "namespace", NAMESPACE)
        quay.set_latency(args.latency)

        # The sequential script first, on tags of its own, against the same double.
        script_targets = [
            (f"bench/repo-{index % repositories}", f"s{index}", digest(f"new-{index % repositories}"))
            for index in range(count)
        ]
        script_seconds = sequential_script(quay.url, script_targets)
        script_bound = 2 * count * args.latency
        report(
            "sequential script: all tags moved",
            f"{script_seconds:.1f} s",
            f"{count / script_seconds:.1f}/s; {script_seconds / script_bound:.2f}x its bound of {script_bound:.1f} s",
        )

        with operator_process(plane, quay.url, args) as operator:
            time.sleep(3)  # the operator's start-up
            quay.reset_requests()
            manifests = yaml.safe_dump_all([resource(index, repositories) for index in range(count)])
            with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
                file.write(manifests)
                file.flush()
                _, cpu_before = process_figures(operator.pid or 0)
                machine_before = machine_cpu(plane, operator.pid or 0)
                started = time.monotonic()
                plane.kubectl("apply", "--server-side", "-f", file.name, timeout=600)
                applied = time.monotonic() - started
                wait_until(lambda: ready_count(plane) == count, timeout=600, interval=1)
            converge = time.monotonic() - started
            _, cpu_after = process_figures(operator.pid or 0)
            machine_after = machine_cpu(plane, operator.pid or 0)
            counts = quay.request_counts()
            reads = counts.get("GET", 0)
            writes = sum(value for method, value in counts.items() if method != "GET")
            bound = convergence_bound(args, reads + writes)
            report(
                "operator: all Ready after apply",
                f"{converge:.1f} s",
                f"{count / converge:.1f}/s; {converge / bound:.2f}x the bound of {bound:.1f} s",
            )
            report("operator speed-up over the sequential script", f"{script_seconds / converge:.2f}x")
            report("kubectl apply of all N returned after", f"{applied:.1f} s")
            report("operator CPU until all Ready", f"{cpu_after - cpu_before:.1f} s", f"{1000 * (cpu_after - cpu_before) / count:.1f} ms per resource")
            spent = {name: machine_after[name] - machine_before.get(name, 0.0) for name in machine_after}
            report(
                "all CPU until all Ready",
                f"{sum(spent.values()):.1f} s",
                ", ".join(f"{name} {seconds:.1f} s" for name, seconds in spent.items()) + f"; {os.cpu_count()} cores",
            )
            report(
                "most Quay requests in one second",
                str(peak_per_second([record.received for record in quay.requests()])),
                f"peak in flight {quay.peak_concurrency()}",
            )
            report("Quay requests per new resource", f"{(reads + writes) / count:.2f}", f"{reads / count:.2f} reads, {writes / count:.2f} writes")

            # One idle refresh cycle.
            versions = {item["metadata"]["name"]: item["metadata"]["resourceVersion"] for item in list_resources(plane)}
            _, cpu_before = process_figures(operator.pid or 0)
            quay.reset_requests()
            time.sleep(args.refresh + 2)
            counts = quay.request_counts()
            _, cpu_after = process_figures(operator.pid or 0)
            changed = sum(
                1 for item in list_resources(plane) if versions.get(item["metadata"]["name"]) != item["metadata"]["resourceVersion"]
            )
            idle_writes = sum(value for method, value in counts.items() if method != "GET")
            pages = listing_pages(quay)
            report(
                "idle refresh cycle: Quay requests",
                str(sum(counts.values())),
                f"{counts.get('GET', 0)} reads; listing every repository once takes {pages}",
            )
            report("idle refresh cycle: Quay writes", str(idle_writes))
            report("idle refresh cycle: resources written", str(changed))
            cycle_cpu = cpu_after - cpu_before
            report("operator CPU over the idle cycle", f"{cycle_cpu:.1f} s", f"{100 * cycle_cpu / (args.refresh + 2):.1f}% of a core")

            # Drift: tags moved by hand.
            moved = [index for index in range(0, count, max(1, count // args.drift))][: args.drift]
            for index in moved:
                quay.move_tag(f"bench/repo-{index % repositories}", f"t{index}", digest(f"old-{index % repositories}"))
            started = time.monotonic()
            wait_until(
                lambda: all(
                    quay.alive_digest(f"bench/repo-{index % repositories}", f"t{index}") == digest(f"new-{index % repositories}")
                    for index in moved
                ),
                timeout=args.refresh * 3,
            )
            report(
                f"drift: {len(moved)} tags moved back",
                f"{time.monotonic() - started:.1f} s",
                f"target: the refresh interval ({args.refresh:g} s) plus 5 s",
            )

            peak, _ = process_figures(operator.pid or 0)
            report("operator peak RSS", f"{peak / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
