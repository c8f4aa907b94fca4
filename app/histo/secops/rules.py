"""The detection rules (rules.yaml beside this module, the one reviewed file): loaded and validated
once, at start, so a bad file stops the collector with one readable line instead of a rule that
silently never fires. A Rule only says whether one attributed event matches; counting is detect.py's."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml  # type: ignore[import-untyped]  # PyYAML ships no type information

LAYERS = ("vault", "zookeeper", "firewall", "ssh", "service", "secops")
ROLES = ("master", "worker", "zookeeper", "vault", "secops", "outside")
SEVERITIES = ("warning", "critical")
RESPONSES = ("quarantine", "alert")
FIELDS = ("path", "reason", "why", "znode", "operation", "target", "user", "proto", "who", "scope", "port", "by",
          "listener")
OPS = ("prefix", "contains", "excludes")
NO_IDENTITY = ("outside", "unknown", "")  # hosts classify() gives when the inventory knows no one
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_KIND = re.compile(r"[a-z][a-z0-9_]{0,39}")
_RULE_KEYS = ("name", "description", "match", "threshold", "severity", "response", "evidence")


class RulesError(ValueError):
    """One line: the file, the rule and the field that is wrong."""


@dataclass(frozen=True)
class Condition:
    field: str
    op: str  # equals | prefix | contains | excludes | below
    values: tuple[Any, ...]

    def holds(self, event: Mapping[str, Any]) -> bool:
        value = event.get(self.field)
        if self.op == "below":
            return isinstance(value, int) and not isinstance(value, bool) and value < self.values[0]
        if value is None or isinstance(value, (dict, list)):
            return self.op == "excludes"  # nothing there: nothing to exclude, nothing to match
        text = str(value)
        if self.op == "equals":
            return text in self.values
        if self.op == "prefix":
            return text.startswith(self.values)
        found = any(v.lower() in text.lower() for v in self.values)
        return found if self.op == "contains" else not found


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    evidence: str
    severity: str
    response: str
    count: int = 1
    within: float = 1.0
    layer: str | None = None
    kinds: frozenset[str] = frozenset()  # empty: any kind of the layer
    roles: frozenset[str] = frozenset()  # empty: any identity
    conditions: tuple[Condition, ...] = field(default=())

    def matches(self, event: Mapping[str, Any], role: str) -> bool:
        """`role`: the refused identity's SPIFFE role, or "outside" (detect.py works it out)."""
        return ((self.layer is None or event.get("layer") == self.layer)
                and (not self.kinds or event.get("kind") in self.kinds)
                and (not self.roles or role in self.roles)
                and all(c.holds(event) for c in self.conditions))

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "layer": self.layer, "kinds": sorted(self.kinds), "roles": sorted(self.roles),
                "conditions": len(self.conditions), "count": self.count, "within": self.within,
                "severity": self.severity, "response": self.response}


class _StrictLoader(yaml.SafeLoader):  # type: ignore[misc]  # (untyped base)
    """safe_load, but a key given twice is an error (plain YAML keeps the last one silently: a reviewer
    would read the first)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise RulesError(f"line {key_node.start_mark.line + 1}: key {key!r} given twice")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _strings(where: str, value: Any, pattern: re.Pattern[str] | None = None,
             allowed: tuple[str, ...] | None = None) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
        raise RulesError(f"{where} must be a non-empty string or list of non-empty strings")
    for v in items:
        if pattern is not None and not pattern.fullmatch(v):
            raise RulesError(f"{where}: {v!r} is not a kind (lowercase letters, digits, _)")
        if allowed is not None and v not in allowed:
            raise RulesError(f"{where}: unknown {v!r} (one of {', '.join(allowed)})")
    return tuple(items)


def _match(where: str, m: Any) -> dict[str, Any]:
    if not isinstance(m, dict):
        raise RulesError(f"{where}: match must be a mapping")
    out: dict[str, Any] = {"conditions": []}
    for key, value in m.items():
        at = f"{where}: match.{key}"
        if key == "layer":
            if value not in LAYERS:
                raise RulesError(f"{at}: unknown layer {value!r} (one of {', '.join(LAYERS)})")
            out["layer"] = value
        elif key in ("kind", "kinds"):
            if "kinds" in out:
                raise RulesError(f"{where}: match has both kind and kinds")
            out["kinds"] = frozenset(_strings(at, value, _KIND))
        elif key == "role":
            out["roles"] = frozenset(_strings(at, value, allowed=ROLES))
        elif key == "port_below":
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 65536:
                raise RulesError(f"{at} must be a port number (1..65536)")
            out["conditions"].append(Condition("port", "below", (value,)))
        elif key in FIELDS:
            out["conditions"].append(Condition(key, "equals", _strings(at, value)))
        elif isinstance(key, str) and key.rsplit("_", 1)[-1] in OPS and key.rsplit("_", 1)[0] in FIELDS:
            name, op = key.rsplit("_", 1)
            out["conditions"].append(Condition(name, op, _strings(at, value)))
        else:
            raise RulesError(f"{where}: unknown match key {key!r} (layer, kind, kinds, role, port_below, "
                             f"<field>, <field>_prefix|_contains|_excludes with field one of {', '.join(FIELDS)})")
    if not ({"layer", "kinds", "roles"} & set(out)):
        raise RulesError(f"{where}: match names no layer, kind or role (it would match every event)")
    return out


def _rule(i: int, r: Any, names: set[str]) -> Rule:
    where = f"rule #{i}"
    if not isinstance(r, dict):
        raise RulesError(f"{where} must be a mapping")
    name = r.get("name")
    if not isinstance(name, str) or not _SLUG.fullmatch(name):
        raise RulesError(f"{where}: name must be a slug (lowercase letters, digits, -), got {name!r}")
    where = f"rule {name!r}"
    if name in names:
        raise RulesError(f"{where}: name given to two rules")
    for key in r:
        if key not in _RULE_KEYS:
            raise RulesError(f"{where}: unknown key {key!r} (one of {', '.join(_RULE_KEYS)})")
    for key in ("description", "evidence"):
        if not isinstance(r.get(key), str) or not r[key].strip():
            raise RulesError(f"{where}: {key} must be a non-empty sentence")
    if r.get("severity") not in SEVERITIES:
        raise RulesError(f"{where}: severity must be one of {', '.join(SEVERITIES)}, got {r.get('severity')!r}")
    if r.get("response") not in RESPONSES:
        raise RulesError(f"{where}: response must be one of {', '.join(RESPONSES)}, got {r.get('response')!r}")
    if "match" not in r:
        raise RulesError(f"{where}: match is missing")
    m = _match(where, r["match"])
    t = r.get("threshold", {"count": 1, "within": 1})
    if not isinstance(t, dict) or set(t) - {"count", "within"}:
        raise RulesError(f"{where}: threshold must be a mapping of count and within only")
    count, within = t.get("count", 1), t.get("within", 1)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise RulesError(f"{where}: threshold.count must be an integer >= 1, got {count!r}")
    if (not isinstance(within, (int, float)) or isinstance(within, bool) or not math.isfinite(within)
            or within <= 0):
        raise RulesError(f"{where}: threshold.within must be a number of seconds > 0, got {within!r}")
    if r["response"] == "quarantine" and "outside" in m.get("roles", ()):
        raise RulesError(f"{where}: response quarantine for role outside (an outside address has no identity "
                         "to contain: alert)")
    names.add(name)
    return Rule(name=name, description=r["description"].strip(), evidence=r["evidence"].strip(),
                severity=r["severity"], response=r["response"], count=count, within=float(within),
                layer=m.get("layer"), kinds=m.get("kinds", frozenset()), roles=m.get("roles", frozenset()),
                conditions=tuple(m["conditions"]))


def parse_rules(text: str) -> list[Rule]:
    try:
        doc = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise RulesError(f"not valid YAML ({f'line {mark.line + 1}: ' if mark else ''}{problem})") from None
    if not isinstance(doc, dict) or set(doc) != {"rules"}:
        raise RulesError("the file must be a mapping with one key, rules")
    if not isinstance(doc["rules"], list) or not doc["rules"]:
        raise RulesError("rules must be a non-empty list")
    names: set[str] = set()
    return [_rule(i, r, names) for i, r in enumerate(doc["rules"], 1)]


def load_rules(path: str | Path | None = None) -> list[Rule]:
    """The packaged rules.yaml, or `path`; RulesError (one line naming the file) when it does not hold."""
    try:
        if path is None:
            where = "rules.yaml (packaged)"
            text = resources.files(__package__ or "histo.secops").joinpath("rules.yaml").read_text(encoding="utf-8")
        else:
            where = str(path)
            text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(f"{where}: cannot read ({getattr(exc, 'strerror', None) or type(exc).__name__})") from None
    try:
        return parse_rules(text)
    except RulesError as exc:
        raise RulesError(f"{where}: {exc}") from None
