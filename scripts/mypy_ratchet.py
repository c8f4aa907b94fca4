"""Keeps the mypy ratchet of pyproject.toml honest (scripts/lint-python.sh runs it after mypy).

The ratchet is the [[tool.mypy.overrides]] lists with relaxed settings (those that set
disallow_untyped_defs = false): every module not on them passes `strict`. This checks that
  - the lists hold no more modules than [tool.histo.mypy-ratchet] max-modules, and no fewer: taking a
    module off lowers the number in the same commit, so the number only goes down;
  - every listed module exists (a renamed or removed module leaves the list);
  - every listed module still fails `strict` (one that passes leaves the list), by a second mypy run
    with the lists left out (its own cache folder, so the normal run's cache stays warm).
Prints one line per problem and exits 1, or prints the ratchet's size and exits 0."""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RELAXED_KEY = "disallow_untyped_defs"


def _ini_value(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _module_file(module: str, mypy_path: list[str]) -> Path | None:
    rel = Path(*module.split("."))
    for base in mypy_path:
        for candidate in (ROOT / base / rel.with_suffix(".py"), ROOT / base / rel / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def _module_of(path: str, mypy_path: list[str]) -> str:
    p = Path(path)
    for base in sorted(mypy_path, key=len, reverse=True):  # the longest base that contains it: app/ before .
        if base != "." and p.parts[: len(Path(base).parts)] == Path(base).parts:
            p = p.relative_to(base)
            break
    parts = list(p.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def main() -> int:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mypy: dict[str, Any] = pyproject["tool"]["mypy"]
    limit = int(pyproject["tool"]["histo"]["mypy-ratchet"]["max-modules"])
    mypy_path = [str(p) for p in mypy.get("mypy_path", ["."])]
    overrides: list[dict[str, Any]] = mypy.get("overrides", [])
    ratchet = [o for o in overrides if o.get(RELAXED_KEY) is False]
    listed = [m for o in ratchet for m in o["module"]]
    problems = []
    if len(listed) > limit:
        problems.append(f"the ratchet lists {len(listed)} modules, more than max-modules = {limit}: "
                        "new modules are typed, not added to the lists")
    elif len(listed) < limit:
        problems.append(f"the ratchet lists {len(listed)} modules: lower max-modules from {limit} to {len(listed)}")
    if len(set(listed)) != len(listed):
        problems.append("a module is listed twice")
    problems += [f"{m}: listed in the ratchet but no such module" for m in listed
                 if _module_file(m, mypy_path) is None]

    # the same configuration without the ratchet's lists, as a mypy.ini
    lines = ["[mypy]"] + [f"{k} = {_ini_value(v)}" for k, v in mypy.items() if k != "overrides"]
    for o in overrides:
        if o in ratchet:
            continue
        modules = o["module"] if isinstance(o["module"], list) else [o["module"]]
        lines.append(f"[mypy-{','.join(modules)}]")
        lines += [f"{k} = {_ini_value(v)}" for k, v in o.items() if k != "module"]
    with tempfile.NamedTemporaryFile("w", suffix=".ini", prefix="mypy-ratchet-") as ini:
        ini.write("\n".join(lines) + "\n")
        ini.flush()
        run = subprocess.run([sys.executable, "-m", "mypy", "--config-file", ini.name,
                              "--cache-dir", str(ROOT / ".mypy_cache" / "ratchet"), "--no-pretty"],
                             cwd=ROOT, capture_output=True, text=True)
    failing = {_module_of(m.group(1), mypy_path)
               for m in re.finditer(r"^([^\s:]+\.py):\d+: error:", run.stdout, re.M)}
    if run.returncode not in (0, 1) or (run.returncode == 1 and not failing):
        problems.append(f"the strict mypy run did not run through (exit {run.returncode}): "
                        f"{(run.stderr or run.stdout).strip()[:500]}")
    else:
        problems += [f"{m}: passes strict now, take it off the ratchet (and lower max-modules)"
                     for m in listed if m not in failing and _module_file(m, mypy_path) is not None]
    for p in problems:
        print(f"mypy ratchet: {p}")
    if not problems:
        print(f"mypy ratchet: {len(listed)} modules on the ratchet (max-modules {limit}), each still failing strict")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
