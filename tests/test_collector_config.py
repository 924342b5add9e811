"""collector-config/ and docker-compose.yml: consistent wiring, and the real binaries accept and run them.

The static checks parse the YAML files; the rest run the Go-built Collector and Jaeger from
.tools/ (``make collector jaeger``) and skip with a plain reason when they are absent.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests import _otel_binaries as ob

ROOT = ob.ROOT
COMPOSE = ROOT / "docker-compose.yml"
MANIFEST = ROOT / "collector-config" / "builder-config.yaml"
BUILD_COLLECTOR = ROOT / "tools" / "build_collector.sh"
BUILD_JAEGER = ROOT / "tools" / "build_jaeger.sh"
COLLECTOR_CONFIGS = (ob.OTELCOL_CONFIG, ob.GATEWAY_CONFIG)

# Factory type of each module the manifest may list, as the pinned release names it.
# A module added to the manifest must be added here, which keeps the cross-check honest.
FACTORY_TYPES = {
    "go.opentelemetry.io/collector/receiver/otlpreceiver": ("receivers", "otlp"),
    "go.opentelemetry.io/collector/processor/memorylimiterprocessor": ("processors", "memory_limiter"),
    "go.opentelemetry.io/collector/processor/batchprocessor": ("processors", "batch"),
    "github.com/open-telemetry/opentelemetry-collector-contrib/processor/redactionprocessor": (
        "processors",
        "redaction",
    ),
    "go.opentelemetry.io/collector/exporter/otlpexporter": ("exporters", "otlp_grpc"),
    "go.opentelemetry.io/collector/exporter/otlphttpexporter": ("exporters", "otlp_http"),
    "github.com/open-telemetry/opentelemetry-collector-contrib/exporter/loadbalancingexporter": (
        "exporters",
        "load_balancing",
    ),
    "github.com/open-telemetry/opentelemetry-collector-contrib/extension/healthcheckextension": (
        "extensions",
        "health_check",
    ),
    "github.com/open-telemetry/opentelemetry-collector-contrib/extension/storage/filestorage": (
        "extensions",
        "file_storage",
    ),
}
KINDS = ("receivers", "processors", "exporters", "extensions")
ENV_REF = re.compile(r"\$\{env:([A-Z0-9_]+)(?::-([^}]*))?\}")


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def manifest_modules() -> dict[str, str]:
    """gomod path → version of every component module in the builder manifest."""
    manifest = load(MANIFEST)
    modules: dict[str, str] = {}
    for kind in KINDS:
        for entry in manifest[kind]:
            path, version = entry["gomod"].split()
            modules[path] = version
    return modules


def used_types(config: Path) -> set[tuple[str, str]]:
    """(kind, type) of every component a Collector config defines, ``type/name`` ids reduced to type."""
    cfg = load(config)
    return {(kind, cid.split("/")[0]) for kind in KINDS for cid in (cfg.get(kind) or {})}


def env_defaults(path: Path) -> dict[str, str | None]:
    """Environment variables a config reads, with their ``:-`` defaults (None: no default)."""
    return {name: default or None for name, default in ENV_REF.findall(path.read_text())}


def port_of(endpoint: str) -> int:
    """The port of ``host:port``, of a URL, or of a bare port number."""
    if endpoint.isdigit():
        return int(endpoint)
    return urlsplit(endpoint if "://" in endpoint else f"//{endpoint}").port or 0


def compose() -> dict[str, Any]:
    services: dict[str, Any] = load(COMPOSE)["services"]
    return services


def published(service: dict[str, Any]) -> dict[int, str]:
    """container port → host binding of a compose service's published ports."""
    out: dict[int, str] = {}
    for spec in service.get("ports", []):
        host_ip, host_port, container_port = str(spec).split(":")
        out[int(container_port)] = f"{host_ip}:{host_port}"
    return out


# --- the builder manifest -------------------------------------------------------------------


def test_manifest_lists_exactly_the_components_the_configs_use() -> None:
    """Every component type in otelcol.yaml and gateway.yaml is built, and nothing else is."""
    modules = manifest_modules()
    unknown = set(modules) - set(FACTORY_TYPES)
    assert not unknown, f"add these modules' factory types to FACTORY_TYPES: {unknown}"
    built = {FACTORY_TYPES[m] for m in modules}
    used = used_types(ob.OTELCOL_CONFIG) | used_types(ob.GATEWAY_CONFIG)
    assert used == built


def test_manifest_pins_one_release_everywhere() -> None:
    """Core, contrib, providers, telemetry and the builder itself are all of the same release."""
    manifest = load(MANIFEST)
    builder = re.search(r"^BUILDER_VERSION=(v\S+)", BUILD_COLLECTOR.read_text(), re.M)
    assert builder is not None
    release = builder.group(1)
    minor = release.split(".")[1]
    versions = set(manifest_modules().values()) | {manifest["telemetry"]["gomod"].split()[1]}
    assert versions == {release}
    # Stable core modules (confmap providers) carry v1.x: one of them for the release.
    provider_versions = {entry["gomod"].split()[1] for entry in manifest["providers"]}
    assert len(provider_versions) == 1 and next(iter(provider_versions)).startswith("v1.")
    assert manifest["dist"]["version"].startswith(f"0.{minor}.")


# --- the Collector configs ------------------------------------------------------------------


@pytest.mark.parametrize("config", COLLECTOR_CONFIGS, ids=lambda p: p.name)
def test_pipelines_use_only_defined_components_and_every_defined_one(config: Path) -> None:
    """Pipelines name only components the file defines, and every defined one is in use."""
    cfg = load(config)
    service = cfg["service"]
    referenced = {("extensions", e) for e in service["extensions"]}
    for pipeline in service["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            referenced |= {(kind, cid) for cid in pipeline.get(kind, [])}
    defined = {(kind, cid) for kind in KINDS for cid in (cfg.get(kind) or {})}
    assert referenced == defined


@pytest.mark.parametrize("config", COLLECTOR_CONFIGS, ids=lambda p: p.name)
def test_every_address_has_a_loopback_default(config: Path) -> None:
    """The configs run with no environment at all, listening on 127.0.0.1 only."""
    refs = ENV_REF.findall(config.read_text())
    optional = {"MEMBRANE_BRIDGE_TOKEN"}
    assert refs
    for name, default in refs:
        assert default or name in optional, f"{name} has no default"
        if name.endswith("_ENDPOINT") and "JAEGER" not in name:
            assert default.startswith("127.0.0.1:"), f"{name} default {default} is not loopback"


def test_bridge_exporter_queues_on_disk_and_retries_forever() -> None:
    """The bridge exporter's queue is on file_storage, so a bridge outage loses nothing."""
    cfg = load(ob.OTELCOL_CONFIG)
    bridge = cfg["exporters"]["otlp_http/bridge"]
    assert bridge["sending_queue"]["enabled"] is True
    assert bridge["sending_queue"]["storage"] in cfg["extensions"]
    assert bridge["retry_on_failure"] == bridge["retry_on_failure"] | {
        "enabled": True,
        "max_elapsed_time": "0s",
    }
    pipelines = cfg["service"]["pipelines"]
    assert pipelines["traces"]["exporters"] == ["otlp_grpc/jaeger", "otlp_http/bridge"]
    assert pipelines["logs"]["exporters"] == ["otlp_http/bridge"]
    for pipeline in pipelines.values():
        assert pipeline["processors"][0] == "memory_limiter"
        assert "redaction" in pipeline["processors"]


def test_gateway_routes_each_fingerprint_to_one_backend_with_a_disk_queue() -> None:
    """Logs route by service and fingerprint, traces by service; both queue on file_storage."""
    cfg = load(ob.GATEWAY_CONFIG)
    logs = cfg["exporters"]["load_balancing/logs"]
    traces = cfg["exporters"]["load_balancing/traces"]
    assert logs["routing_key"] == "attributes"
    assert logs["routing_attributes"] == ["service.name", "membrane.fingerprint"]
    assert traces["routing_key"] == "service"
    for exporter in (logs, traces):
        assert exporter["sending_queue"]["storage"] in cfg["extensions"]
        # The per-backend queue would be in memory only: off, so failures reach the disk queue.
        assert exporter["protocol"]["otlp"]["sending_queue"]["enabled"] is False


def test_jaeger_defaults_do_not_collide_with_the_collector_defaults() -> None:
    """otelcol.yaml sends to jaeger.yaml's default OTLP port, and no two defaults share a port."""
    collector = env_defaults(ob.OTELCOL_CONFIG)
    jaeger = env_defaults(ob.JAEGER_CONFIG)
    assert collector["MEMBRANE_JAEGER_OTLP_ENDPOINT"] == jaeger["JAEGER_OTLP_GRPC_ENDPOINT"]
    listening = [
        port_of(str(v))
        for name, v in (collector | jaeger).items()
        if v
        and (name.endswith("_ENDPOINT") and name != "MEMBRANE_JAEGER_OTLP_ENDPOINT" or name.endswith("_PORT"))
    ]
    assert len(listening) == len(set(listening)), listening


# --- docker-compose.yml -------------------------------------------------------------------


def test_compose_mounts_exist_in_the_repository() -> None:
    """Every bind mount and build context in docker-compose.yml is a file or folder of the repo."""
    for name, service in compose().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).is_file(), f"{name}: {source} is not a file in the repo"
        if "build" in service:
            assert (ROOT / service["build"] / "Dockerfile").is_file()


def test_compose_collector_runs_the_mounted_otelcol_yaml() -> None:
    """The Collector container reads collector-config/otelcol.yaml through its mount."""
    collector = compose()["otel-collector"]
    mounts = dict(v.split(":")[:2] for v in collector["volumes"] if v.startswith("."))
    target = mounts["./collector-config/otelcol.yaml"]
    assert f"--config={target}" in collector["command"]


def test_compose_collector_env_names_are_the_ones_otelcol_yaml_reads() -> None:
    """Compose sets only variables otelcol.yaml reads, and points them at the compose services."""
    services = compose()
    env = services["otel-collector"]["environment"]
    assert set(env) <= set(env_defaults(ob.OTELCOL_CONFIG))
    assert env["MEMBRANE_JAEGER_OTLP_ENDPOINT"] == "jaeger:4317"
    bridge_url = urlsplit(env["MEMBRANE_BRIDGE_URL"])
    bridge_cmd = services["bridge"]["command"]
    assert bridge_url.hostname == "bridge"
    assert bridge_url.port == int(bridge_cmd[bridge_cmd.index("--port") + 1])
    assert "--config" not in " ".join(services["jaeger"].get("command", []))  # the image's own config


def test_compose_published_ports_match_the_listeners_on_loopback() -> None:
    """Each published port is one the service listens on, bound to the host's 127.0.0.1."""
    services = compose()
    collector_env = services["otel-collector"]["environment"]
    listen = {
        port_of(v)
        for k, v in collector_env.items()
        if k.endswith(("GRPC_ENDPOINT", "HTTP_ENDPOINT", "HEALTH_ENDPOINT"))
    }
    assert set(published(services["otel-collector"])) == listen
    assert 16686 in published(services["jaeger"])
    for name in ("bridge", "bus"):
        cmd = services[name]["command"]
        assert set(published(services[name])) == {int(cmd[cmd.index("--port") + 1])}
    for service in services.values():
        for binding in published(service).values():
            assert binding.startswith("127.0.0.1:")


def test_compose_agent_exports_to_the_collector_and_bridge_to_the_bus() -> None:
    """The agent's OTLP endpoint is the Collector's gRPC port, and the bridge's bus URL is the bus."""
    services = compose()
    agent = services["agent"]
    endpoint = urlsplit(agent["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"])
    collector_grpc = services["otel-collector"]["environment"]["MEMBRANE_COLLECTOR_GRPC_ENDPOINT"]
    assert (endpoint.hostname, endpoint.port) == ("otel-collector", port_of(collector_grpc))
    assert agent["environment"]["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
    assert agent["command"][:2] == ["opentelemetry-instrument", "python"]
    assert (ROOT / agent["command"][2]).is_file()
    bus_url = urlsplit(services["bridge"]["environment"]["MEMBRANE_BUS_URL"])
    bus_cmd = services["bus"]["command"]
    assert (bus_url.hostname, bus_url.port) == ("bus", int(bus_cmd[bus_cmd.index("--port") + 1]))


def test_compose_images_are_the_pinned_releases() -> None:
    """Compose runs the same Collector and Jaeger releases that the tests build."""
    services = compose()
    release = re.search(r"^BUILDER_VERSION=v(\S+)", BUILD_COLLECTOR.read_text(), re.M)
    assert release is not None
    assert services["otel-collector"]["image"] == f"otel/opentelemetry-collector-contrib:{release.group(1)}"
    # Jaeger's module tag v1.N.0 is release v2.(N-63).0.
    tag = re.search(r"^JAEGER_VERSION=v1\.(\d+)\.0", BUILD_JAEGER.read_text(), re.M)
    assert tag is not None
    assert services["jaeger"]["image"] == f"jaegertracing/jaeger:2.{int(tag.group(1)) - 63}.0"


# --- the real binaries --------------------------------------------------------------------

needs_collector = pytest.mark.skipif(not ob.OTELCOL.is_file(), reason=ob.COLLECTOR_MISSING)
needs_jaeger = pytest.mark.skipif(not ob.JAEGER.is_file(), reason=ob.JAEGER_MISSING)


def validate(binary: Path, config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), "validate", "--config", str(config)],
        env=ob.base_env() | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@needs_collector
@pytest.mark.parametrize("config", COLLECTOR_CONFIGS, ids=lambda p: p.name)
def test_collector_validates_config_with_defaults(config: Path) -> None:
    """The built Collector accepts the config with no environment set."""
    result = validate(ob.OTELCOL, config, {})
    assert result.returncode == 0, result.stdout + result.stderr


@needs_collector
@pytest.mark.parametrize("config", COLLECTOR_CONFIGS, ids=lambda p: p.name)
def test_collector_validates_config_with_env(config: Path, tmp_path: Path) -> None:
    """The built Collector accepts the config with every address taken from the environment."""
    env = ob.CollectorPorts.pick().env(tmp_path / "queue") | {
        "MEMBRANE_JAEGER_OTLP_ENDPOINT": "127.0.0.1:24317",
        "MEMBRANE_BRIDGE_URL": "http://127.0.0.1:28010",
        "MEMBRANE_BRIDGE_TOKEN": "s3cret",
        "MEMBRANE_GATEWAY_BACKENDS": "[127.0.0.1:24411, 127.0.0.1:24412, 127.0.0.1:24413]",
    }
    result = validate(ob.OTELCOL, config, env)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_jaeger
def test_jaeger_validates_its_config() -> None:
    """The built Jaeger accepts collector-config/jaeger.yaml."""
    result = validate(ob.JAEGER, ob.JAEGER_CONFIG, ob.JaegerPorts.pick().env())
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.e2e
@needs_collector
def test_collector_health_check_answers_on_its_port(tmp_path: Path) -> None:
    """The Collector started with otelcol.yaml on free ports reports itself available."""
    with ob.collector(tmp_path) as (_proc, ports):
        status, body = ob.http_get(ports.health_url)
        assert status == 200
        assert b"Server available" in body


@pytest.mark.e2e
@needs_jaeger
def test_jaeger_query_api_answers_on_its_port(tmp_path: Path) -> None:
    """Jaeger started with jaeger.yaml on free ports serves its v3 and legacy query APIs."""
    with ob.jaeger(tmp_path) as (_proc, ports):
        assert ob.http_get(f"{ports.query_url}/api/v3/services") == (200, b"{}")
        status, _body = ob.http_get(f"{ports.query_url}/api/services")
        assert status == 200


@pytest.mark.e2e
@needs_collector
@needs_jaeger
def test_span_through_the_collector_reaches_jaeger(tmp_path: Path) -> None:
    """A span sent over OTLP/gRPC to the Collector is found through Jaeger's query API."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from tests._helpers import wait_for

    with (
        ob.jaeger(tmp_path) as (_j, jports),
        ob.collector(tmp_path, jaeger_otlp=jports.otlp_grpc_endpoint) as (_c, cports),
    ):
        provider = TracerProvider(resource=Resource.create({"service.name": "collector-smoke"}))
        provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=cports.grpc_endpoint, insecure=True))
        )
        with provider.get_tracer("smoke").start_as_current_span("altitude.transition") as span:
            span.set_attribute("hrm.layer", "altitude")
        provider.shutdown()
        spans = wait_for(lambda: ob.jaeger_spans(jports.query_url, "collector-smoke"), timeout=15)
        assert [(s["name"], s["attrs"]["hrm.layer"]) for s in spans] == [("altitude.transition", "altitude")]


@pytest.mark.e2e
@needs_collector
def test_collector_masks_secrets_the_sender_left_in(tmp_path: Path) -> None:
    """A token that a plain OTel client sends reaches the bridge's ledger masked by the redaction processor."""
    import logging
    import sys

    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    from tests._helpers import wait_for

    token = "ghp_" + "A1b2C3d4E5" * 4
    ledger = tmp_path / "ledger.jsonl"
    (bridge_port,) = ob.free_ports(1)
    bridge_argv = [
        str(Path(sys.executable).parent / "membrane-otel"), "bridge", "serve",
        "--port", str(bridge_port), "--ledger", str(ledger), "--no-bus",
    ]  # fmt: skip
    bridge_url = f"http://127.0.0.1:{bridge_port}"
    with (
        ob.running(bridge_argv, ob.base_env(), tmp_path / "bridge.log", f"{bridge_url}/health"),
        ob.collector(tmp_path, bridge_url=bridge_url) as (_c, ports),
    ):
        provider = LoggerProvider(resource=Resource.create({"service.name": "plain-client"}))
        provider.add_log_record_processor(
            SimpleLogRecordProcessor(OTLPLogExporter(endpoint=ports.grpc_endpoint, insecure=True))
        )
        logger = logging.getLogger("plain-client")
        logger.propagate = False
        handler = LoggingHandler(logger_provider=provider)
        logger.addHandler(handler)
        try:
            logger.error("deploy with %s failed", token, extra={"github.token": token})
        finally:
            logger.removeHandler(handler)
            provider.shutdown()
        text = wait_for(
            lambda: ledger.exists() and "deploy with" in ledger.read_text() and ledger.read_text(), 15
        )
        assert token not in text
        assert "****" in text
