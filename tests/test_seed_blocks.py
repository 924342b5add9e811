"""The seeds' Python code blocks for the features in scope, run as written under the wrapper.

Only the import paths differ, as the README's seed mapping lists them; the names a block uses
without defining (``cid``, ``do_work``, ``task``…) come from a small prelude. Each seed's
blocks run in one real ``opentelemetry-instrument`` process; the ledger shows they did.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests._helpers import ROOT, clean_env, read_ledger, run_instrumented

PRELUDE = """
import logging
cid = "citizen_17"
def do_work():
    raise KeyError("missing citizen 17")
class _Task:
    task_id = "demo-001"
task = _Task()
used_pass, cache_hit, added, after_cnt = 2, True, 3, 9
avg_confidence, avg_quality, second_pass_rate, cpu_usage, memory_usage = 0.786, 0.691, 0.137, 23.0, 41.0
task_id = "demo-001"
confidence, threshold = 0.5, 0.7
"""

SEED_000 = """
# seeds/000 — Quick Start, 1. Basic Setup
from membrane_otel import setup_l2_logger

# Replace existing logging setup
logger = setup_l2_logger(
    script_name="resurrect_all_citizens",
    script_path="orchestration/scripts/resurrect_all_citizens.py"
)

# Use normally
logger.info("Starting resurrection...")       # Console only
logger.error("Bootstrap failed for %s", cid)  # Console + L2 graph

# seeds/000 — To send warnings to L2
logger = setup_l2_logger(
    script_name="my_script",
    script_path="orchestration/scripts/my_script.py",
    l2_level=logging.WARNING  # Send WARNING+ to L2
)

# seeds/000 — After (L2 Logging)
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent.parent))

from membrane_otel import setup_l2_logger

logger = setup_l2_logger(
    script_name="my_script",
    script_path="orchestration/scripts/my_script.py"
)

def main():
    logger.info("Starting script...")  # Console only
    try:
        do_work()
    except Exception as e:
        logger.error(f"Failed: {e}", exc_info=True)  # Console + L2 graph

main()

# seeds/000 — Metrics & Monitoring
from membrane_otel import get_metrics

metrics = get_metrics()
print(f"Dropped logs: {metrics['dropped_logs']}")
print(f"Spool writes: {metrics['spool_writes']}")
"""

SEED_001 = """
# seeds/001 — API
from membrane_otel.events import emit_event, emit_task_lifecycle, emit_alert, emit_system_event

# Basic usage
emit_event('task_started', {
    'goal': 'AGI 자기정정 루프 설명',
    'priority': 'high'
}, task_id='demo-001', persona_id='gitko')

# Convenience wrappers
emit_task_lifecycle('completed', 'demo-001',
                    quality=0.85, confidence=0.78)

emit_alert('warning', 'Proxy port not responding',
           component='proxy', port=18091)

emit_system_event('migration', 'D to C drive',
                  reason='SSD_performance', status='completed')

# seeds/001 — orchestrator/self_correction.py
emit_event("evidence_correction", {
    "pass": used_pass,
    "cache_hit": bool(cache_hit),
    "added": int(added),
    "total_citations": int(after_cnt),
}, task_id=task.task_id)

# seeds/001 — monitor/metrics_collector.py
from membrane_otel.events import emit_monitoring_snapshot

emit_monitoring_snapshot({
    'confidence': avg_confidence,
    'quality': avg_quality,
    'second_pass_rate': second_pass_rate,
    'cpu_percent': cpu_usage,
    'memory_percent': memory_usage
})

# seeds/001 — Example 1: Task Lifecycle
from membrane_otel.events import emit_task_lifecycle

emit_task_lifecycle('started', task_id,
                    goal='AGI 설명', persona='gitko')
emit_task_lifecycle('completed', task_id,
                    quality=0.85, confidence=0.78,
                    evidence_added=5, cache_hit=True)

# seeds/001 — Example 3: Health Monitoring
from membrane_otel.events import emit_alert, emit_monitoring_snapshot

emit_monitoring_snapshot({
    'confidence': 0.786,
    'quality': 0.691,
    'second_pass_rate': 0.137
})
if confidence < threshold:
    emit_alert('warning',
               'Confidence below threshold',
               component='agi_core',
               confidence=confidence,
               threshold=threshold)

# seeds/001 — Backward Compatibility
from membrane_otel.events import append_ledger

append_ledger({
    "event": "eval",
    "task_id": task_id,
    "quality": 0.85
})
from membrane_otel.events import emit_event

emit_event("eval", {
    "quality": 0.85
}, task_id=task_id)
"""

SEED_002 = """
import asyncio
from datetime import datetime, timedelta
from membrane_otel.watchdog import register_component
register_component("htm_orchestrator", lambda: {"queue_depth": 127, "worker_count": 8},
                   thresholds={"queue_depth": {"warn": 1000, "critical": 5000}})

async def boot():
    # seeds/002 — Integration
    from membrane_otel.watchdog import layer2_watchdog

    # Start watchdog
    await layer2_watchdog.start()

    # Check readiness (30s timeout)
    readiness = await layer2_watchdog.check_readiness(timeout_seconds=30)
    # Returns: {'htm_orchestrator': True, 'trigger_mesh': True, ...}

    # Get health report
    report = layer2_watchdog.get_health_report()
    if not all(readiness.values()):
        logging.getLogger("boot").error("Layer 2 not ready!")

    # seeds/002 — 5W1H Clarity Logging
    from membrane_otel.watchdog import clarity_5w1h

    # Log task dispatch
    await clarity_5w1h.log_task_dispatch(
        dispatcher="htm_orchestrator",
        task_id="task_12345",
        task_type="execute_sandbox",
        target_worker="worker_3",
        queue_depth=247,
        selection_method="least_loaded_worker",
        reasons=[
            "Worker 3 has lowest CPU utilization (23%)",
            "Worker 3 completed last 5 tasks successfully",
            "Queue depth approaching warning threshold (247/1000)",
            "Dispatch to balance load across workers"
        ]
    )

    # Load shedding
    await clarity_5w1h.log_load_shedding(
        shedder="htm_orchestrator",
        shed_count=100,
        total_load=1500,
        shed_criteria="priority<5_and_age>10min",
        reasons=[
            "Queue depth exceeded critical threshold (1500/1000)",
            "Shed 100 low-priority tasks to protect SLA",
            "Retained all high-priority and recent tasks"
        ]
    )

    # Task rerouting
    await clarity_5w1h.log_reroute(
        router="event_policy_engine",
        task_id="task_789",
        from_target="worker_5_failed",
        to_target="worker_2_healthy",
        reroute_reason=[
            "Worker 5 failed health check",
            "Worker 2 has capacity",
            "Task not time-sensitive, safe to reroute"
        ],
        method="failover_routing"
    )
    await layer2_watchdog.stop()
    print("READINESS", readiness, report["layer"])

asyncio.run(boot())
import membrane_otel
membrane_otel.force_flush()

# seeds/002 — Queryable
from membrane_otel.watchdog import clarity_5w1h
narratives = clarity_5w1h.get_narratives(
    actor="htm_orchestrator",
    since=datetime.now() - timedelta(hours=1)
)
print("BY ACTOR", len(narratives))
narratives = clarity_5w1h.get_narratives(
    action="shed_load",
    limit=50
)
print("SHED", len(narratives))
"""

SEED_003 = """
# seeds/003 — Client emits with scope, engines decide
from membrane_otel.stimuli import emit_script_error, Scope

emit_script_error(
    source="script:resurrect_all_citizens",
    error_message="Bootstrap failed",
    scope=Scope.ORGANIZATIONAL,  # L2, not specific citizen
)

from membrane_otel.stimuli import emit_script_error, Scope
import sys

try:
    do_work()
except Exception:
    emit_script_error(
        source="script:my_script",
        error_message="Operation failed",
        scope=Scope.ORGANIZATIONAL,  # Goes to L2
        exc_info=sys.exc_info(),
        metadata={"script_path": __file__}
    )

from membrane_otel.stimuli import emit_metric, Scope

emit_metric(
    source="script:resurrect_all_citizens",
    metric_name="resurrection_success_rate",
    value=0.95,
    scope=Scope.ORGANIZATIONAL,
    tags={"environment": "production"}
)

# seeds/003 — New Approach (Correct)
from membrane_otel.stimuli import MembraneEmitter, Scope
from membrane_otel.stimuli import (
    StimulusFeatures,
    OriginType,
)

emitter = MembraneEmitter(source_id="script:resurrect_all_citizens")

emitter.emit(
    scope=Scope.ORGANIZATIONAL,  # L2
    channel="org.intent",
    content="Resurrect all citizens",
    features=StimulusFeatures(
        novelty=0.5,
        uncertainty=0.2,
        trust=0.95,  # High trust - it's our script
        urgency=0.9,  # Urgent
        valence=0.3,  # Positive (awakening)
        scale=1.0,   # High scale
        intensity=1.0,
    ),
    origin=OriginType.EXTERNAL,
    provenance={"source": "script:resurrect_all_citizens"},
)

from membrane_otel.stimuli import get_metrics

metrics = get_metrics()
print(f"Dropped envelopes: {metrics['dropped_count']}")
print(f"Spooled to disk: {metrics['spool_writes']}")
"""

SEED_004 = """
# seeds/004 — Usage Examples
from membrane_otel import tracer

class AltitudeGovernor:
    def transition(self, from_level: int, to_level: int, reason: str):
        with tracer.span("alt", "transition", "altitude.py",
                        f"L{from_level}→L{to_level}") as ctx:
            # ... do transition
            if ctx:
                ctx.set_output(f"success", reason=reason)

class GateController:
    def check_gate(self, gate_type: str, context: dict) -> bool:
        allowed = True
        tracer.event(
            hrm="foc",
            operation="gate_check",
            component="gates.py",
            input_data=gate_type,
            output_data="allowed" if allowed else "denied",
            metadata={"context": context}
        )
        return allowed

class MemoryManager:
    def write(self, namespace: str, key: str, data: dict):
        with tracer.span("mem", "write", "manager.py",
                        f"{namespace}.{key}") as ctx:
            # ... do write
            if ctx:
                ctx.set_output("written", tokens_saved=45)

AltitudeGovernor().transition(3, 2, "user requested tactical")
GateController().check_gate("WriteApprovalGate", {"user_consent": True})
MemoryManager().write("altitude", "session", {})
print(tracer.generate_id("alt"))
"""

# What each seed's run must leave in the ledger (event names, at least these).
EXPECTED = {
    "000": {"script_error"},
    "001": {
        "task_started",
        "task_completed",
        "alert_triggered",
        "migration",
        "evidence_correction",
        "monitoring_snapshot",
        "eval",
    },
    "002": {"narrative.dispatch_task", "narrative.shed_load", "narrative.reroute_task"},
    "003": {"membrane.stimulus"},
    "004": {"hrm_trace"},
}
BLOCKS = {"000": SEED_000, "001": SEED_001, "002": SEED_002, "003": SEED_003, "004": SEED_004}


@pytest.mark.parametrize("seed", sorted(BLOCKS))
def test_seed_code_blocks_run_as_written(tmp_path: Path, seed: str) -> None:
    """The seed's blocks run unchanged (import paths aside) and leave their records in the ledger."""
    (tmp_path / "orchestration" / "scripts").mkdir(parents=True)
    script = tmp_path / "orchestration" / "scripts" / f"seed_{seed}.py"
    script.write_text(PRELUDE + BLOCKS[seed])
    proc = run_instrumented(script, clean_env(tmp_path, MEMBRANE_TRACE="1"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = {ln["event"] for ln in read_ledger(tmp_path / "ledger.jsonl")}
    assert EXPECTED[seed] <= events, EXPECTED[seed] - events
    if seed == "002":
        assert "READINESS {'htm_orchestrator': True} layer2_orchestration" in proc.stdout
        assert "BY ACTOR 2" in proc.stdout and "SHED 1" in proc.stdout
    if seed == "004":
        assert "[alt] transition: L3→L2 → success (" in proc.stderr
        assert re.search(r"^alt_\d{10}_[0-9a-f]{4}$", proc.stdout, re.M)


def test_readme_lists_the_seed_module_mapping() -> None:
    """Every seed module path the blocks above replace is named in the README's mapping."""
    readme = (ROOT / "README.md").read_text()
    for seed_path in (
        "orchestration.libs.l2_logger",
        "orchestrator.event_emitter",
        "memory_bus",
        "backend.monitoring.layer2_watchdog",
        "backend.core.clarity_5w1h",
        "orchestration.libs.stimuli",
        "orchestration.schemas.membrane_envelopes",
        "shared.tracing",
    ):
        assert f"`{seed_path}`" in readme, seed_path


def test_readme_settings_table_is_generated_from_the_model() -> None:
    """The README's table is exactly what the settings model generates (regenerate with the module)."""
    from membrane_otel._internal.settings_doc import readme_with_table

    readme = (ROOT / "README.md").read_text()
    assert readme == readme_with_table(readme), (
        "README settings table is stale: run `python -m membrane_otel._internal.settings_doc README.md`"
    )


def test_every_setting_is_in_the_readme() -> None:
    """Each variable of the model (the issue's four included) appears in the README's table."""
    from membrane_otel.settings import ENV_VARS

    readme = (ROOT / "README.md").read_text()
    for names in ENV_VARS.values():
        assert f"`{names[0]}`" in readme, names[0]
    for var in ("MEMBRANE_WATCHDOG", "MEMBRANE_THROTTLE_TYPE_INTERVAL", "MEMBRANE_COLLECTOR_HEALTH_URL"):
        assert f"| `{var}` |" in readme


def test_valence_is_signed() -> None:
    """seeds/003: valence 0.3 is "positive", so the scale is -1..1; the other features stay 0..1."""
    from pydantic import ValidationError

    from membrane_otel.stimuli import StimulusFeatures

    assert StimulusFeatures(valence=-0.6).valence == -0.6
    with pytest.raises(ValidationError):
        StimulusFeatures(valence=1.5)
    with pytest.raises(ValidationError):
        StimulusFeatures(urgency=-0.1)
    assert json.loads(StimulusFeatures(valence=0.3).model_dump_json())["valence"] == 0.3
