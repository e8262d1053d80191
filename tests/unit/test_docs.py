"""The pages in docs/ against the code: every reason, field, option and metric is documented, and links resolve.

Each list comes from the code (reasons.py, the CRD, the argument parser, metrics.py, health.lua),
so adding a reason, a field, an option or a metric without documenting it fails a test here.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import lupa  # type: ignore[import-untyped]
import prometheus_client.metrics
import pytest
import yaml

from quay_tag_operator import __main__ as command_line
from quay_tag_operator import metrics, reasons
from quay_tag_operator.config import ENV_PREFIX, OperatorConfig

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
CRD = ROOT / "crds" / "repositorytags.quaytag.dev.yaml"
HEALTH_LUA = ROOT / "deploy" / "argocd" / "health.lua"

FENCE = re.compile(r"^(```|~~~)")
# An inline link or image: [text](target) or ![alt](target), with an optional "title".
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def read(page: str) -> str:
    return (DOCS / page).read_text(encoding="utf-8")


def all_reasons() -> list[reasons.Reason]:
    """Every Reason object that reasons.py defines, whether or not it is listed in ALL."""
    return [value for value in vars(reasons).values() if isinstance(value, reasons.Reason)]


def reason_names() -> list[str]:
    return sorted({reason.name for reason in all_reasons()})


def schema_paths(prefix: str, schema: Mapping[str, Any]) -> Iterator[str]:
    """Yield the dotted path of every property under ``schema``, with ``[]`` for array items."""
    for name, child in (schema.get("properties") or {}).items():
        path = f"{prefix}.{name}"
        yield path
        yield from schema_paths(path, child)
        items = child.get("items")
        if isinstance(items, Mapping):
            yield from schema_paths(f"{path}[]", items)


def crd_paths() -> list[str]:
    crd = yaml.safe_load(CRD.read_text(encoding="utf-8"))
    paths: list[str] = []
    for version in crd["spec"]["versions"]:
        root = version["schema"]["openAPIV3Schema"]["properties"]
        for section in ("spec", "status"):
            paths.append(section)
            paths.extend(schema_paths(section, root[section]))
    return sorted(set(paths) - {"spec", "status"})


def command_line_options(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """Run the operator's own --help and return every option string it lists."""
    with pytest.raises(SystemExit):
        command_line.parse_args(["--help"])
    help_text = capsys.readouterr().out
    options: list[str] = []
    for line in help_text.splitlines():
        if not line.startswith("  -"):
            continue
        # "  -n NAMESPACE, --namespace NAMESPACE    help text": the invocation ends at two spaces.
        invocation = re.split(r"\s{2,}", line.strip())[0]
        options.extend(part.split(" ")[0] for part in invocation.split(", "))
    return options


def exported_metric_names() -> list[str]:
    """The name under which Prometheus scrapes each metric that metrics.py registers."""
    names = []
    for value in vars(metrics).values():
        if isinstance(value, prometheus_client.metrics.MetricWrapperBase):
            family = next(iter(value.describe()))
            # The client stores counters without their _total suffix and adds it on export.
            names.append(f"{family.name}_total" if family.type == "counter" else family.name)
    return sorted(names)


def format_seconds(seconds: float) -> str:
    if seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def backoff_text(backoff: reasons.Backoff) -> str:
    """The form in which docs/reasons.md writes a backoff, such as "2 s doubling to 5 min"."""
    return f"{format_seconds(backoff.initial)} doubling to {format_seconds(backoff.maximum)}"


def summary_rows() -> dict[str, list[str]]:
    """The cells of each row of the summary table in docs/reasons.md, by reason name."""
    rows: dict[str, list[str]] = {}
    for line in read("reasons.md").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) != 4:
            continue
        name = re.search(r"`([A-Za-z]+)`", cells[0])
        if name is not None:
            rows.setdefault(name.group(1), cells)
    return rows


def argocd_health(reason: reasons.Reason) -> str:
    """Run deploy/argocd/health.lua on a resource whose Ready condition has ``reason``."""
    runtime = lupa.LuaRuntime()
    body = {
        "metadata": {"name": "example", "generation": 1},
        # Only a suspended resource reports the reason Suspended.
        "spec": {"suspend": reason.name == reasons.SUSPENDED.name},
        "status": {
            "observedGeneration": 1,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if reason.ready else "False",
                    "reason": reason.name,
                    "message": "example",
                    "observedGeneration": 1,
                }
            ],
        },
    }
    runtime.globals().obj = runtime.table_from(body, recursive=True)
    result = runtime.execute(HEALTH_LUA.read_text(encoding="utf-8"))
    return str(result["status"])


def github_anchor(heading: str) -> str:
    """The anchor that GitHub generates for a Markdown heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    found: set[str] = set()
    counts: dict[str, int] = {}
    for line in prose_lines(markdown):
        heading = HEADING.match(line)
        if heading is None:
            continue
        anchor = github_anchor(heading.group(2))
        # GitHub numbers repeated headings: intro, intro-1, intro-2.
        count = counts.get(anchor, 0)
        counts[anchor] = count + 1
        found.add(anchor if count == 0 else f"{anchor}-{count}")
    return found


def prose_lines(markdown: str) -> Iterator[str]:
    """Yield the lines outside fenced code blocks."""
    fenced = False
    for line in markdown.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            yield line


def markdown_pages() -> list[Path]:
    return sorted(DOCS.glob("*.md")) + sorted(ROOT.glob("README*.md"))


def relative_links(page: Path) -> list[str]:
    links = []
    for line in prose_lines(page.read_text(encoding="utf-8")):
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if urllib.parse.urlsplit(target).scheme:
                continue
            links.append(target)
    return links


@pytest.mark.parametrize("name", reason_names())
def test_reason_has_section(name: str) -> None:
    headings = [line for line in prose_lines(read("reasons.md")) if line.startswith("#")]
    assert any(f"`{name}`" in heading for heading in headings), f"docs/reasons.md has no heading for {name}"


@pytest.mark.parametrize("name", reason_names())
def test_reason_in_summary_table(name: str) -> None:
    assert name in summary_rows(), f"the summary table of docs/reasons.md has no row for {name}"


@pytest.mark.parametrize("reason", all_reasons(), ids=lambda reason: f"{reason.name}-ready-{reason.ready}")
def test_reason_backoff_documented(reason: reasons.Reason) -> None:
    cells = summary_rows()[reason.name]
    if reason.retry is None:
        assert "doubling" not in cells[2], f"{reason.name} has no backoff, but the table gives one"
    else:
        assert backoff_text(reason.retry) in cells[2], f"{reason.name}: expected {backoff_text(reason.retry)!r}"


@pytest.mark.parametrize("reason", all_reasons(), ids=lambda reason: f"{reason.name}-ready-{reason.ready}")
def test_reason_argocd_health_documented(reason: reasons.Reason) -> None:
    cells = summary_rows()[reason.name]
    assert cells[3] == argocd_health(reason)


@pytest.mark.parametrize("reason", all_reasons(), ids=lambda reason: f"{reason.name}-ready-{reason.ready}")
def test_reason_ready_documented(reason: reasons.Reason) -> None:
    cells = summary_rows()[reason.name]
    assert ("True" if reason.ready else "False") in cells[1]


def test_crd_paths_found() -> None:
    paths = crd_paths()
    # Guards the walk over the schema itself: a nested field and an array item field.
    assert "spec.connection.tokenSecretRef.key" in paths
    assert "status.history[].reversion" in paths


@pytest.mark.parametrize("path", crd_paths())
def test_crd_property_in_reference(path: str) -> None:
    assert f"`{path}`" in read("reference.md"), f"docs/reference.md does not mention `{path}`"


def test_command_line_options_found(capsys: pytest.CaptureFixture[str]) -> None:
    options = command_line_options(capsys)
    assert "--quay-url" in options
    assert "-n" in options
    assert "--namespace" in options


def test_command_line_options_in_reference(capsys: pytest.CaptureFixture[str]) -> None:
    reference = read("reference.md")
    # In code quotes, alone or with its value: `--namespace` or `-n NAMESPACE`.
    missing = [
        option
        for option in command_line_options(capsys)
        if re.search(rf"`{re.escape(option)}[`\s]", reference) is None
    ]
    assert missing == []


@pytest.mark.parametrize("field", sorted(OperatorConfig.model_fields))
def test_environment_variable_in_reference(field: str) -> None:
    variable = ENV_PREFIX + field.upper()
    assert f"`{variable}`" in read("reference.md")


def test_metrics_found() -> None:
    assert "quay_tag_operator_passes_total" in exported_metric_names()


@pytest.mark.parametrize("name", exported_metric_names())
def test_metric_in_reference(name: str) -> None:
    assert f"`{name}`" in read("reference.md")


def test_pages_have_links() -> None:
    assert any(relative_links(page) for page in markdown_pages())


@pytest.mark.parametrize("page", markdown_pages(), ids=lambda page: page.name)
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for link in relative_links(page):
        path_part, _, fragment = link.partition("#")
        target = (page.parent / urllib.parse.unquote(path_part)).resolve() if path_part else page
        if not target.exists():
            broken.append(f"{link}: no file {target}")
            continue
        if fragment and target.suffix == ".md":
            if urllib.parse.unquote(fragment) not in anchors(target.read_text(encoding="utf-8")):
                broken.append(f"{link}: no heading for #{fragment} in {target.name}")
    assert broken == []


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Deleting resources and finalizers", "deleting-resources-and-finalizers"),
        ("`InSync`", "insync"),
        ("Unauthorized, Forbidden or RepositoryNotFound", "unauthorized-forbidden-or-repositorynotfound"),
        ("制限事項", "制限事項"),
    ],
)
def test_github_anchor(heading: str, anchor: str) -> None:
    assert github_anchor(heading) == anchor
