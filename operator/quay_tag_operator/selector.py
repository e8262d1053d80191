"""Label selectors that split RepositoryTags among several operator instances.

The syntax is Kubernetes' equality-based selector, as in ``kubectl get -l``: requirements
separated by commas, all of which must hold. Each is ``key=value`` (or ``key==value``),
``key!=value``, ``key`` (the label exists) or ``!key`` (it does not). Set-based
requirements (``in``, ``notin``) are not supported.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

# A label key: an optional DNS subdomain prefix and a name of up to 63 characters.
_KEY = r"(?:[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
# A label value: empty, or up to 63 characters that start and end with a letter or digit.
_VALUE = r"(?:[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?"
_REQUIREMENT = re.compile(rf"(?P<absent>!)?(?P<key>{_KEY})(?:(?P<operator>==|!=|=)(?P<value>{_VALUE}))?")


@dataclass(frozen=True)
class Requirement:
    key: str
    # "=", "!=", "exists" or "absent".
    operator: str
    value: str = ""

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "exists":
            return self.key in labels
        if self.operator == "absent":
            return self.key not in labels
        if self.operator == "=":
            return labels.get(self.key) == self.value
        # "!=" holds for a resource without the label too, as in Kubernetes.
        return labels.get(self.key) != self.value


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(requirement.matches(labels) for requirement in self.requirements)

    def __str__(self) -> str:
        parts = []
        for requirement in self.requirements:
            if requirement.operator == "exists":
                parts.append(requirement.key)
            elif requirement.operator == "absent":
                parts.append(f"!{requirement.key}")
            else:
                parts.append(f"{requirement.key}{requirement.operator}{requirement.value}")
        return ",".join(parts)


def parse_selector(text: str) -> LabelSelector:
    """Parse an equality-based label selector; raise ValueError naming the invalid requirement."""
    requirements = []
    for part in text.split(","):
        part = part.strip()
        match = _REQUIREMENT.fullmatch(part)
        if not part or match is None:
            raise ValueError(
                f"invalid label selector requirement {part!r}: expected key=value, key!=value, key or !key"
            )
        key, operator, value = match["key"], match["operator"], match["value"] or ""
        if match["absent"]:
            if operator is not None:
                raise ValueError(f"invalid label selector requirement {part!r}: !key takes no value")
            requirements.append(Requirement(key, "absent"))
        elif operator is None:
            requirements.append(Requirement(key, "exists"))
        else:
            requirements.append(Requirement(key, "!=" if operator == "!=" else "=", value))
    return LabelSelector(tuple(requirements))
