"""Argo CD's Lua sandbox, as close as lupa allows: Lua 5.1 (gopher-lua's dialect), and only the
libraries Argo CD opens for a health script by default (util/lua/lua.go: package, base with its
coroutine table, table, and a "safe" os of time and date). No string library: not even methods
on string values, which gopher-lua only has once the string library is opened."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lupa.lua51 as lua
import yaml

from .conftest import CHART_DIR

CUSTOMIZATIONS = CHART_DIR / "argocd" / "resource_customizations"
HEALTH_DIR = CUSTOMIZATIONS / "feldera.dev" / "_"
HEALTH_SCRIPT = HEALTH_DIR / "health.lua"

_SANDBOX = """
local safe_os = { time = os.time, date = os.date }
debug.setmetatable("", nil)
string, io, math, debug, os = nil, nil, nil, nil, safe_os
package.loaded.string, package.loaded.io, package.loaded.math = nil, nil, nil
package.loaded.debug, package.loaded.os = nil, safe_os
"""


class _Loader(yaml.SafeLoader):
    """YAML as Argo CD reads it (sigs.k8s.io/yaml): timestamps stay strings."""


_Loader.yaml_implicit_resolvers = {
    key: [r for r in resolvers if r[0] != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_manifest(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = yaml.load(path.read_text(), Loader=_Loader)
    return result


def runtime() -> Any:
    rt = lua.LuaRuntime(unpack_returned_tuples=True, register_eval=False, register_builtins=False)
    rt.execute(_SANDBOX)
    return rt


def _to_lua(rt: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return rt.table_from({k: _to_lua(rt, v) for k, v in value.items()})
    if isinstance(value, list):
        return rt.table_from([_to_lua(rt, v) for v in value])
    return value


def run(script: str, obj: dict[str, Any]) -> Any:
    """Run `script` with `obj` as the global `obj`, as Argo CD runs a health script."""
    rt = runtime()
    rt.globals().obj = _to_lua(rt, obj)
    return rt.execute(script)


def health(obj: dict[str, Any], script: Path = HEALTH_SCRIPT) -> dict[str, str]:
    """Argo CD's HealthStatus of `obj`: status and message (absent message: empty)."""
    result = run(script.read_text(), obj)
    return {"status": result["status"], "message": result["message"] or ""}
