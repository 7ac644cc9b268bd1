"""The ``otel`` and ``prometheus`` filter names: loaded on first use, never imported otherwise."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from trpc_kafka._config.errors import ConfigError
from trpc_kafka._config.file import set_global_config
from trpc_kafka._runtime.filters import get_filter, resolve_filters
from trpc_kafka._runtime.server import new_server


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_nothing_of_either_extra_is_imported_unless_a_service_names_it() -> None:
    result = run(
        """
        import sys
        import trpc_kafka
        from trpc_kafka._runtime.server import Service
        proxy = trpc_kafka.new_client_proxy("p", target="kafka://127.0.0.1:1?topic=t")
        Service("s", address="127.0.0.1:1?topics=t&group=g", filters=[])
        extras = ("opentelemetry", "prometheus_client", "trpc_kafka.otel", "trpc_kafka.prometheus")
        print([m for m in sys.modules if m.startswith(extras)])
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("name", "library", "extra"),
    [("otel", "opentelemetry", "otel"), ("prometheus", "prometheus_client", "prometheus")],
)
def test_a_missing_library_is_a_config_error_naming_the_extra(
    name: str, library: str, extra: str
) -> None:
    result = run(
        f"""
        import sys
        sys.modules[{library!r}] = None  # as if not installed
        from trpc_kafka import ConfigError
        from trpc_kafka._runtime.server import Service
        try:
            Service("s", address="127.0.0.1:1?topics=t&group=g", filters=[{name!r}])
        except ConfigError as exc:
            print(exc)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"service 's': filter {name!r} needs {library}, which is not installed: "
        f"pip install 'trpc-kafka[{extra}]'"
    )


def test_the_names_load_their_module_on_first_lookup() -> None:
    from trpc_kafka import otel, prometheus

    assert get_filter("otel", "server") is otel.server_filter
    assert get_filter("otel", "client") is otel.client_filter
    assert get_filter("prometheus", "server") is prometheus.server_filter
    assert resolve_filters(["prometheus", "otel"], "client", where="x") == [
        prometheus.client_filter,
        otel.client_filter,
    ]


def test_unknown_names_list_the_built_in_ones() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_filters(["otle"], "server", where="service 's'")
    assert "unknown server filter 'otle'" in str(info.value)
    assert "otel" in str(info.value) and "prometheus" in str(info.value)


def test_yaml_filter_lists_take_the_names(tmp_path: Path) -> None:
    from trpc_kafka import otel, prometheus

    path = tmp_path / "trpc_python.yaml"
    path.write_text(
        textwrap.dedent(
            """
            server:
              filter: [prometheus]
              service:
                - name: s
                  protocol: kafka
                  address: 127.0.0.1:9092?topics=t&group=g
                  filter: [otel]
            """
        )
    )
    try:
        server = new_server(path)
        assert server.service("s").filters == [prometheus.server_filter, otel.server_filter]
    finally:
        set_global_config(None)
