"""The stimuli SDK: each emitter's envelope validates and has the seeds' shape."""

from __future__ import annotations

import sys

import pytest
from pydantic import ValidationError

from membrane_otel.membrane._envelope import Envelope
from membrane_otel.stimuli import (
    MembraneEmitter,
    OriginType,
    Scope,
    StimulusFeatures,
    emit_metric,
    emit_script_error,
    emit_tool_result,
    emit_ui_action,
)
from membrane_otel.testing import capture

SEED_ENVELOPE_KEYS = {
    "type",
    "scope",
    "source",
    "channel",
    "content",
    "severity",
    "features_raw",
    "origin",
    "provenance",
    "metadata",
}
SEED_METADATA_KEYS = {"stimulus_id", "origin", "timestamp_ms", "signal_type"}


def _only_envelope(got) -> dict:  # type: ignore[no-untyped-def]
    envs = got.envelopes
    assert len(envs) == 1, envs
    Envelope.model_validate(envs[0])  # validates against the model
    return envs[0]


def test_custom_emitter_matches_the_seed_example() -> None:
    """MembraneEmitter.emit with the seed's 'Resurrect all citizens' arguments."""
    with capture() as got:
        sid = MembraneEmitter(source_id="script:resurrect_all_citizens").emit(
            scope=Scope.ORGANIZATIONAL,
            channel="org.intent",
            content="Resurrect all citizens",
            features=StimulusFeatures(
                novelty=0.5, uncertainty=0.2, trust=0.95, urgency=0.9, valence=0.3, scale=1.0, intensity=1.0
            ),
            origin=OriginType.EXTERNAL,
            provenance={"source": "script:resurrect_all_citizens"},
            target_nodes=["N7", "N23"],
        )
    env = _only_envelope(got)
    assert SEED_ENVELOPE_KEYS | {"target_nodes"} == set(env)
    assert env["type"] == "membrane.inject" and env["scope"] == "organizational"
    assert env["source"] == "script:resurrect_all_citizens" and env["channel"] == "org.intent"
    assert env["features_raw"] == {
        "novelty": 0.5,
        "uncertainty": 0.2,
        "trust": 0.95,
        "urgency": 0.9,
        "valence": 0.3,
        "scale": 1.0,
        "intensity": 1.0,
    }
    assert env["origin"] == "external" and env["target_nodes"] == ["N7", "N23"]
    assert env["metadata"]["stimulus_id"] == sid and SEED_METADATA_KEYS <= set(env["metadata"])
    assert "citizen_id" not in env, "clients never carry a routing citizen_id"


def test_script_error_envelope_has_seed_000_metadata() -> None:
    """emit_script_error: fingerprint, dedupe key, stack trace, urgency 0.7, redacted."""
    try:
        raise KeyError("token=abc123secret")
    except KeyError:
        with capture() as got:
            emit_script_error(
                source="script:my_script",
                error_message="Bootstrap failed password=hunter2",
                scope=Scope.ORGANIZATIONAL,
                exc_info=sys.exc_info(),
                metadata={"script_path": "orchestration/scripts/my_script.py"},
            )
    env = _only_envelope(got)
    md = env["metadata"]
    assert env["severity"] == "error" and env["features_raw"]["urgency"] == 0.7
    assert env["channel"] == "signals.script.my_script" and env["content"].startswith("my_script: ")
    assert md["signal_type"] == "script_error" and md["error_type"] == "KeyError"
    assert len(md["stack_fingerprint"]) == 40 and len(md["dedupe_key"]) == 40
    assert md["stack_trace"].startswith("Traceback (most recent call last):")
    text = str(env)
    assert "hunter2" not in text and "abc123secret" not in text


def test_metric_ui_and_tool_emitters_validate() -> None:
    """emit_metric, emit_ui_action and emit_tool_result produce valid envelopes."""
    with capture() as got:
        emit_metric(
            source="script:x",
            metric_name="resurrection_success_rate",
            value=0.95,
            scope=Scope.ORGANIZATIONAL,
            tags={"environment": "production"},
        )
        emit_ui_action(
            action_type="select_nodes",
            description="User selected nodes N7, N23 for focus",
            scope=Scope.PERSONAL,
            citizen_id="ada",
            metadata={"selected_nodes": ["N7", "N23"]},
        )
        emit_tool_result(
            tool_id="code_search",
            request_id="req_123",
            success=True,
            result={"matches": [1]},
            scope=Scope.PERSONAL,
            citizen_id="ada",
            execution_time_ms=125.5,
            provenance={"files_searched": 42},
        )
    envs = got.envelopes
    assert [e["metadata"]["signal_type"] for e in envs] == ["metric", "ui_action", "tool_result"]
    for env in envs:
        Envelope.model_validate(env)
        assert "citizen_id" not in env
    assert envs[1]["scope"] == "personal" and envs[1]["provenance"]["citizen_id"] == "ada"
    assert envs[2]["provenance"]["files_searched"] == 42


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scope": "galactic"},
        {"features": {"urgency": 1.5}},
        {"origin": "martian"},
    ],
)
def test_invalid_values_fail_at_the_call(kwargs: dict) -> None:
    """A bad scope, a feature outside 0..1 or an unknown origin raises at the emitting call."""
    args = {
        "scope": Scope.PERSONAL,
        "channel": "c",
        "content": "x",
        "features": {"urgency": 0.5},
        "origin": OriginType.EXTERNAL,
    } | kwargs
    with pytest.raises((ValueError, ValidationError)):
        MembraneEmitter("test:x").emit(**args)


def test_content_is_truncated_to_500_chars() -> None:
    """Content longer than 500 characters is cut, not rejected."""
    with capture() as got:
        MembraneEmitter("test:x").emit(Scope.PERSONAL, "c", "y" * 2000, {"urgency": 0.1})
    assert len(_only_envelope(got)["content"]) == 500
