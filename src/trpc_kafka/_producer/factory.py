"""``new_client_proxy``: a proxy from a target or from the loaded configuration file."""

from __future__ import annotations

from collections.abc import Sequence

from trpc_kafka._config.address import resolve_address, warn_other_side_keys
from trpc_kafka._config.errors import ConfigError
from trpc_kafka._config.file import get_global_config
from trpc_kafka._producer.callbacks import ErrorCallback, SuccessCallback
from trpc_kafka._producer.proxy import ClientProxy
from trpc_kafka._runtime.filters import Filter, resolve_filters


def new_client_proxy(
    name: str,
    *,
    target: str | None = None,
    timeout: float | None = None,
    filters: Sequence[Filter | str] | None = None,
    success_callback: SuccessCallback | None = None,
    error_callback: ErrorCallback | None = None,
) -> ClientProxy:
    """A producer proxy for the client service ``name`` (the reference's ``NewClientProxy``).

    The target is ``target=`` or else the ``target`` of the ``client.service`` entry named
    ``name`` in the loaded configuration file; neither is a ConfigError naming ``name``.
    ``timeout`` (seconds) overrides the entry's ``timeout`` (ms, which falls back to the
    ``client.timeout``); None and no configured timeout means no limit. The filters are the
    configured ones (``client.filter`` then the entry's ``filter``) followed by ``filters``
    (callables or registered client filter names). ``success_callback`` / ``error_callback``
    replace the module-level async-send callbacks for this proxy.

    Nothing connects here: the pooled producer of the address is created on the first call.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"client proxy name must be a non-empty string, got {name!r}", key="name")
    file_cfg = get_global_config()
    service = file_cfg.client_service(name) if file_cfg is not None else None
    where = f"client proxy {name!r}"
    if service is not None:
        line = f":{service.line}" if service.line is not None else ""
        where = f"{file_cfg.path if file_cfg else ''}{line}: client.service {name!r}"
    resolved_target = target if target is not None else (service.target if service else "")
    if not resolved_target:
        raise ConfigError(
            f"client proxy {name!r} has no target: pass target='kafka://host:port?topic=...' or "
            f"add a client.service entry named {name!r} with a target to the configuration file",
            key="target",
        )
    try:
        config = resolve_address(resolved_target)
    except ConfigError as exc:
        if target is not None or service is None or file_cfg is None:
            raise
        # From the file: where the target is (file, line of target:, the entry's name).
        raise ConfigError(
            f"client.service {name!r}: target: {exc.message}",
            key="target",
            value=exc.value,
            file=file_cfg.path,
            line=service.target_line or service.line,
        ) from None
    warn_other_side_keys(config, "producer", where)

    if timeout is None:
        timeout_ms = service.timeout_ms if service is not None else None
        if service is None and file_cfg is not None:
            timeout_ms = file_cfg.client.timeout_ms
        effective_timeout = None if not timeout_ms else timeout_ms / 1000
    else:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigError(
                f"client proxy {name!r}: invalid timeout {timeout!r}; allowed: seconds > 0 or None",
                key="timeout",
                value=str(timeout),
            )
        effective_timeout = float(timeout)

    names: tuple[str, ...] = ()
    if service is not None:
        names = service.filters
    elif file_cfg is not None:
        names = file_cfg.client.filters
    chain_filters: list[Filter] = resolve_filters(names, "client", where=where)
    for f in filters or ():
        if isinstance(f, str):
            chain_filters.extend(resolve_filters([f], "client", where=where))
        elif callable(f):
            chain_filters.append(f)
        else:
            raise ConfigError(
                f"{where}: filter {f!r} is neither a callable nor a registered filter name",
                key="filter",
            )
    return ClientProxy(
        name,
        config,
        target=resolved_target,
        timeout=effective_timeout,
        filters=chain_filters,
        success_callback=success_callback,
        error_callback=error_callback,
    )


__all__ = ["new_client_proxy"]
