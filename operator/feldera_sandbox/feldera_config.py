"""A pipeline's `runtime_config` and `program_config` as the pipeline manager stores them.

The manager deserializes what a client sends into its typed configuration and serializes it back:
missing keys get their defaults, unknown keys are dropped silently, and a value of the wrong type
is refused with 400 `InvalidRuntimeConfig` / `InvalidProgramConfig`. The open-source edition also
refuses fault tolerance. `storage_edits` lists the edits refused while storage is in use
(`EditRestrictedToClearedStorage`), each in backticks as the manager writes them.

Only the keys that matter to the behaviours emulated are type-checked (numbers, booleans, the
storage and fault-tolerance shapes); other known keys are kept as given.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any, Final

__all__ = [
    "ConfigError",
    "default_runtime_config",
    "fault_tolerance_enabled",
    "normalize_program_config",
    "normalize_runtime_config",
    "storage_edits",
    "storage_enabled",
]

_DEFAULT_STORAGE: Final[dict[str, Any]] = {
    "backend": {"name": "default"},
    "min_storage_bytes": None,
    "min_step_storage_bytes": None,
    "compression": "default",
    "cache_mib": None,
}
_DEFAULT_RESOURCES: Final[dict[str, Any]] = {
    "cpu_cores_min": None,
    "cpu_cores_max": None,
    "memory_mb_min": None,
    "memory_mb_max": None,
    "storage_mb_max": None,
    "storage_class": None,
    "service_account_name": None,
    "namespace": None,
}
_DEFAULT_RUNTIME: Final[dict[str, Any]] = {
    "workers": 8,
    "max_rss_mb": None,
    "datafusion_memory_mb": None,
    "hosts": 1,
    "storage": _DEFAULT_STORAGE,
    "fault_tolerance": {"model": "none", "checkpoint_interval_secs": 60},
    "cpu_profiler": True,
    "tracing": False,
    "tracing_endpoint_jaeger": "127.0.0.1:6831",
    "min_batch_size_records": 0,
    "max_buffering_delay_usecs": 0,
    "resources": _DEFAULT_RESOURCES,
    "clock_resolution_usecs": 1_000_000,
    "clock_timezone_offset": None,
    "pin_cpus": [],
    "provisioning_timeout_secs": None,
    "max_parallel_connector_init": None,
    "init_containers": None,
    "checkpoint_during_suspend": True,
    "http_workers": None,
    "io_workers": None,
    "env": {},
    "dev_tweaks": {},
    "logging": None,
    "pipeline_template_configmap": None,
}
_DEFAULT_PROGRAM: Final[dict[str, Any]] = {
    "profile": None,
    "cache": True,
    "runtime_version": None,
    "use_platform_compiler": False,
}
_PROFILES: Final = ("dev", "unoptimized", "optimized", "optimized_symbols")
_FT_MODELS: Final = ("at_least_once", "exactly_once")
_UINT: Final = (
    "workers",
    "hosts",
    "max_rss_mb",
    "datafusion_memory_mb",
    "min_batch_size_records",
    "max_buffering_delay_usecs",
    "clock_resolution_usecs",
    "provisioning_timeout_secs",
    "max_parallel_connector_init",
    "http_workers",
    "io_workers",
)
_BOOL: Final = ("cpu_profiler", "tracing", "checkpoint_during_suspend")


class ConfigError(Exception):
    """A configuration the manager refuses: `error` is its `ValidationError` as JSON
    (`{"DeserializationFailed": ...}` or `{"EnterpriseFeature": ...}`)."""

    def __init__(self, reason: str, error: dict[str, str]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error


def _invalid(reason: str) -> ConfigError:
    return ConfigError(f"could not deserialize due to: {reason}", {"DeserializationFailed": reason})


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{json.dumps(value)}`"
    if isinstance(value, int | float):
        return f"number `{value}`"
    if isinstance(value, str):
        return f'string "{value}"'
    return "sequence" if isinstance(value, list) else "map"


def default_runtime_config() -> dict[str, Any]:
    return copy.deepcopy(_DEFAULT_RUNTIME)


def _storage(value: Any) -> dict[str, Any] | None:
    # `true` is the default storage, `false` and `null` none, an object is filled with defaults.
    if value is None or value is False:
        return None
    if value is True:
        return copy.deepcopy(_DEFAULT_STORAGE)
    if not isinstance(value, Mapping):
        raise _invalid(f"invalid type: {_json_type(value)}, expected boolean or StorageOptions")
    result = copy.deepcopy(_DEFAULT_STORAGE)
    for key in result:
        if key in value:
            result[key] = copy.deepcopy(value[key])
    backend = result["backend"]
    if not isinstance(backend, Mapping) or backend.get("name") not in ("default", "file", "object"):
        raise _invalid("unknown variant of storage backend, expected `default`, `file`, `object`")
    return result


def _fault_tolerance(value: Any) -> dict[str, Any]:
    # Absent or null: none. `{}`: exactly_once (the model's default once the object is given).
    if value is None:
        return {"model": "none", "checkpoint_interval_secs": 60}
    if value in ("initial_state", "latest_checkpoint"):
        return {"model": "exactly_once", "checkpoint_interval_secs": 60}
    if not isinstance(value, Mapping):
        raise _invalid(f"invalid type: {_json_type(value)}, expected FtConfig")
    model = value.get("model", "exactly_once")
    if model is None:
        model = "none"
    if model not in ("none", *_FT_MODELS):
        raise _invalid(
            f"unknown variant `{model}`, expected one of `none`, `at_least_once`, `exactly_once`"
        )
    interval = value.get("checkpoint_interval_secs", 60)
    if interval is not None and not _is_uint(interval):
        raise _invalid(f"invalid type: {_json_type(interval)}, expected u64")
    return {"model": model, "checkpoint_interval_secs": interval}


def _is_uint(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def normalize_runtime_config(value: Any, *, enterprise: bool) -> dict[str, Any]:
    """The stored form of a `runtime_config`; `ConfigError` when the manager would refuse it."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise _invalid(f"invalid type: {_json_type(value)}, expected struct RuntimeConfig")
    result = default_runtime_config()
    for key in result:
        if key not in value:
            continue
        given = value[key]
        if key in _UINT:
            if given is None and _DEFAULT_RUNTIME[key] is None:
                continue
            if not _is_uint(given):
                raise _invalid(f"invalid type: {_json_type(given)}, expected an unsigned integer")
        elif key in _BOOL and not isinstance(given, bool):
            raise _invalid(f"invalid type: {_json_type(given)}, expected a boolean")
        if key == "storage":
            result[key] = _storage(given)
        elif key == "fault_tolerance":
            result[key] = _fault_tolerance(given)
        elif key == "resources":
            if not isinstance(given, Mapping):
                raise _invalid(f"invalid type: {_json_type(given)}, expected struct ResourceConfig")
            result[key] = {k: copy.deepcopy(given.get(k, v)) for k, v in _DEFAULT_RESOURCES.items()}
        else:
            result[key] = copy.deepcopy(given)
    if result["workers"] > 65535:
        raise _invalid(f"invalid value: integer `{result['workers']}`, expected u16")
    if not enterprise and fault_tolerance_enabled(result):
        raise ConfigError(
            "enterprise feature: fault tolerance", {"EnterpriseFeature": "fault tolerance"}
        )
    return result


def normalize_program_config(value: Any) -> dict[str, Any]:
    """The stored form of a `program_config`; `ConfigError` when the manager would refuse it."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise _invalid(f"invalid type: {_json_type(value)}, expected struct ProgramConfig")
    result = dict(_DEFAULT_PROGRAM)
    for key in result:
        if key in value:
            result[key] = value[key]
    if result["profile"] is not None and result["profile"] not in _PROFILES:
        raise _invalid(
            f"unknown variant `{result['profile']}`, expected one of "
            + ", ".join(f"`{p}`" for p in _PROFILES)
        )
    for key in ("cache", "use_platform_compiler"):
        if not isinstance(result[key], bool):
            raise _invalid(f"invalid type: {_json_type(result[key])}, expected a boolean")
    if result["runtime_version"] is not None and not isinstance(result["runtime_version"], str):
        raise _invalid(f"invalid type: {_json_type(result['runtime_version'])}, expected a string")
    return result


def fault_tolerance_enabled(runtime_config: Mapping[str, Any]) -> bool:
    ft = runtime_config.get("fault_tolerance")
    return isinstance(ft, Mapping) and ft.get("model") in _FT_MODELS


def storage_enabled(runtime_config: Mapping[str, Any]) -> bool:
    return runtime_config.get("storage") is not None


def storage_edits(
    old_name: str,
    new_name: str,
    old: Mapping[str, Any],
    new: Mapping[str, Any] | None,
) -> list[str]:
    """The edits refused while storage is not cleared, as the manager names them."""
    refused: list[str] = []
    if new_name != old_name:
        refused.append("`name`")
    if new is None:
        return refused
    old_resources = old.get("resources") or {}
    new_resources = new.get("resources") or {}
    checks = (
        ("workers", old.get("workers"), new.get("workers")),
        ("hosts", old.get("hosts", 1), new.get("hosts", 1)),
        ("fault_tolerance", old.get("fault_tolerance"), new.get("fault_tolerance")),
        (
            "resources.storage_mb_max",
            old_resources.get("storage_mb_max"),
            new_resources.get("storage_mb_max"),
        ),
        ("resources.namespace", old_resources.get("namespace"), new_resources.get("namespace")),
        (
            "resources.storage_class",
            old_resources.get("storage_class"),
            new_resources.get("storage_class"),
        ),
        (
            "clock_timezone_offset",
            old.get("clock_timezone_offset"),
            new.get("clock_timezone_offset"),
        ),
    )
    refused.extend(f"`runtime_config.{key}`" for key, before, after in checks if before != after)
    return refused
