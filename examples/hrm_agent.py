"""A small HRM agent that exercises all six layers (altitude, focus, reasoning, learning,
memory, system), nested several levels, with a caught exception logged as an error and a
gate that answers ``blocked``.

Run it under the distro — no membrane-otel code is needed for set-up:

    MEMBRANE_TRACE=1 opentelemetry-instrument python examples/hrm_agent.py
    membrane-otel traces view --last 50      # the same tree, from the ledger
    membrane-otel traces stats

The trace points are the operations listed in the tables of ``seeds/004``, each with the
trace data its table names as metadata. Operations with a duration use ``tracer.span``;
instant decisions use ``tracer.event``.
"""

from __future__ import annotations

import logging

from membrane_otel import tracer

log = logging.getLogger("hrm_agent")
TIERS = ("cold", "warm", "hot")


class MemoryManager:
    def __init__(self) -> None:
        self.store: dict[str, str] = {}

    def read(self, namespace: str, key: str) -> str | None:
        with tracer.span("mem", "read", "manager.py", f"{namespace}.{key}") as ctx:
            value = self.store.get(f"{namespace}.{key}")
            ctx.set_output("hit" if value else "miss", namespace=namespace, key=key, tier="warm")
            return value

    def write(self, namespace: str, key: str, value: str) -> None:
        with tracer.span("mem", "write", "manager.py", f"{namespace}.{key}") as ctx:
            self.store[f"{namespace}.{key}"] = value
            ctx.set_output("written", namespace=namespace, key=key, tier="warm", tokens_saved=45)

    def move(self, key: str, from_tier: str, to_tier: str) -> None:
        """Tier promotion (towards hot) or demotion (towards cold)."""
        op = "promote" if TIERS.index(to_tier) > TIERS.index(from_tier) else "demote"
        with tracer.span("mem", op, "manager.py", key) as ctx:
            ctx.set_output(f"{from_tier}→{to_tier}", key=key, from_tier=from_tier, to_tier=to_tier)


class Altitude:
    def evaluate(self, plan: str) -> str:
        with tracer.span("alt", "evaluate", "evaluator.py", plan) as ctx:
            ctx.set_output("approve", altitude="L2", verdict="approve", confidence=0.9)
            return "approve"


class Focus:
    def stance(self, from_stance: str, to_stance: str) -> None:
        tracer.event("foc", "stance_change", "stance.py", f"{from_stance}→{to_stance}", to_stance,
                     metadata={"from_stance": from_stance, "to_stance": to_stance, "gate": "StanceGate"})  # fmt: skip

    def check(self, gate_type: str, allowed: bool, reason: str) -> bool:
        with tracer.span("foc", "gate_check", "gates.py", gate_type) as ctx:
            ctx.set_output("allowed" if allowed else "denied", gate_type=gate_type, reason=reason)
            if not allowed:
                ctx.block(reason)  # a gate that says no: 'blocked', which is not an error
            return allowed

    def consent(self, operation: str, allowed: bool) -> bool:
        tracer.event("foc", "consent_check", "consent.py", operation, "allowed" if allowed else "denied",
                     status="success" if allowed else "blocked",
                     metadata={"operation": operation, "allowed": allowed})  # fmt: skip
        return allowed

    def switch_lane(self, from_lane: str, to_lane: str, reason: str) -> None:
        tracer.event("foc", "lane_switch", "executor.py", f"{from_lane}→{to_lane}", to_lane,
                     metadata={"from_lane": from_lane, "to_lane": to_lane, "reason": reason})  # fmt: skip

    def route(self, signal_type: str) -> list[str]:
        with tracer.span("foc", "route", "router.py", signal_type) as ctx:
            agents = ["retriever", "writer"]
            ctx.set_output(",".join(agents), signal_type=signal_type, bundle="answer", agents=agents)
            return agents


class Reasoner:
    @tracer.trace("rsn", "classify", "reasoner.py")
    def classify(self, text: str) -> str:
        return "question" if text.endswith("?") else "statement"

    def route(self, kind: str) -> str:
        with tracer.span("rsn", "route", "reasoner.py", kind) as ctx:
            strategy = "retrieve_then_answer" if kind == "question" else "acknowledge"
            ctx.set_output(strategy, strategy=strategy, reason="input classified")
            return strategy

    def escalate(self, from_level: str, to_level: str, trigger: str) -> None:
        with tracer.span("rsn", "escalate", "reasoner.py", f"{from_level}→{to_level}") as ctx:
            ctx.set_output("escalated", from_level=from_level, to_level=to_level, trigger=trigger)


class Learner:
    def learn(self, text: str) -> None:
        with tracer.span("lrn", "pattern_match", "learner.py", text) as ctx:
            ctx.set_output("P-017", pattern_code="P-017", confidence=0.82)
        with tracer.span("lrn", "pattern_add", "learner.py", "P-018") as ctx:
            ctx.set_output("learned", pattern_code="P-018", source="session")
        with tracer.span("lrn", "generalize", "learner.py", "P-017+P-018") as ctx:
            ctx.set_output("P-G3", from_patterns=["P-017", "P-018"], to_pattern="P-G3")
        tracer.event("lrn", "pattern_trim", "learner.py", "P-004", "trimmed",
                     metadata={"pattern_code": "P-004", "reason": "unused for 30 days"})  # fmt: skip


class Tools:
    def execute(self, tool: str) -> str:
        with tracer.span("sys", "execute", "executor.py", tool) as ctx:
            if tool == "flaky_search":
                # Secrets in messages never leave the process: this token is redacted.
                raise ConnectionError("search backend refused api_key=sk-live-0000SECRET0000 at 10.0.0.7")
            ctx.set_output("ok")
            return "ok"


def answer(question: str) -> None:
    memory, altitude, focus = MemoryManager(), Altitude(), Focus()
    reasoner, learner, tools = Reasoner(), Learner(), Tools()
    with tracer.span("alt", "transition", "altitude.py", "L3→L2") as ctx:
        focus.stance("explore", "execute")
        with tracer.span("alt", "plan", "planner.py", question) as plan:
            kind = reasoner.classify(question)
            strategy = reasoner.route(kind)
            plan.set_output(strategy, altitude="L2", intent=kind, plan_summary=strategy)
        altitude.evaluate(strategy)
        if focus.check("WriteApprovalGate", True, "user consent on file"):
            memory.write("altitude", "session", strategy)
        learner.learn(question)
        with tracer.span("alt", "execute", "loop.py", strategy) as run:
            focus.route("question")
            memory.read("altitude", "session")
            memory.move("altitude.session", "warm", "hot")
            try:
                tools.execute("flaky_search")
            except ConnectionError:
                log.exception("tool flaky_search failed for request 4711")
                reasoner.escalate("L2", "L3", "tool failure")
                focus.switch_lane("search", "local_index", "search backend down")
            tools.execute("local_index")
            memory.move("altitude.draft", "hot", "cold")
            run.set_output("answered", altitude="L2", action_type="answer")
        focus.check("ExternalSendGate", False, "no consent for outbound email")
        focus.consent("send_email", False)
        ctx.set_output("success", from_level="L3", to_level="L2", reason="user requested tactical")


def main() -> None:
    log.info("agent starting")
    answer("What changed in the altitude plan?")
    log.info("agent done")


if __name__ == "__main__":
    main()
