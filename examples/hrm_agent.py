"""A small HRM agent that exercises all six layers (altitude, focus, reasoning, learning,
memory, system), nested several levels, with a caught exception logged as an error and a
gate that answers ``blocked``.

Run it under the distro — no membrane-otel code is needed for set-up:

    MEMBRANE_TRACE=1 opentelemetry-instrument python examples/hrm_agent.py

The trace points are the operations listed in the tables of ``seeds/004``.
"""

from __future__ import annotations

import logging

from membrane_otel import tracer

log = logging.getLogger("hrm_agent")


class MemoryManager:
    def __init__(self) -> None:
        self.store: dict[str, str] = {}

    def read(self, namespace: str, key: str) -> str | None:
        with tracer.span("mem", "read", "manager.py", f"{namespace}.{key}") as ctx:
            value = self.store.get(f"{namespace}.{key}")
            ctx.set_output("hit" if value else "miss", tier="warm")
            return value

    def write(self, namespace: str, key: str, value: str) -> None:
        with tracer.span("mem", "write", "manager.py", f"{namespace}.{key}") as ctx:
            self.store[f"{namespace}.{key}"] = value
            ctx.set_output("written", tokens_saved=45, tier="warm")


class Gates:
    def check(self, gate_type: str, allowed: bool, reason: str) -> bool:
        with tracer.span("foc", "gate_check", "gates.py", gate_type) as ctx:
            ctx.set_output("allowed" if allowed else "denied", reason=reason)
            if not allowed:
                ctx.block(reason)
            return allowed


class Reasoner:
    @tracer.trace("rsn", "classify", "reasoner.py")
    def classify(self, text: str) -> str:
        return "question" if text.endswith("?") else "statement"

    def route(self, kind: str) -> str:
        with tracer.span("rsn", "route", "reasoner.py", kind) as ctx:
            strategy = "retrieve_then_answer" if kind == "question" else "acknowledge"
            ctx.set_output(strategy, reason="input classified")
            return strategy


class Learner:
    def pattern_match(self, text: str) -> None:
        with tracer.span("lrn", "pattern_match", "learner.py", text) as ctx:
            ctx.set_output("P-017", confidence=0.82)
        with tracer.span("lrn", "pattern_add", "learner.py", "P-018") as ctx:
            ctx.set_output("learned", source="session")


class Tools:
    def execute(self, tool: str) -> str:
        with tracer.span("sys", "execute", "executor.py", tool) as ctx:
            if tool == "flaky_search":
                # Secrets in messages never leave the process: this token is redacted.
                raise ConnectionError("search backend refused api_key=sk-live-0000SECRET0000 at 10.0.0.7")
            ctx.set_output("ok")
            return "ok"


def answer(question: str) -> None:
    memory, gates, reasoner, learner, tools = MemoryManager(), Gates(), Reasoner(), Learner(), Tools()
    with tracer.span("alt", "transition", "altitude.py", "L3→L2") as ctx:
        with tracer.span("alt", "plan", "planner.py", question) as plan:
            kind = reasoner.classify(question)
            strategy = reasoner.route(kind)
            plan.set_output(strategy, intent=kind)
        if gates.check("WriteApprovalGate", True, "user consent on file"):
            memory.write("altitude", "session", strategy)
        learner.pattern_match(question)
        with tracer.span("alt", "execute", "loop.py", strategy) as run:
            memory.read("altitude", "session")
            try:
                tools.execute("flaky_search")
            except ConnectionError:
                log.exception("tool flaky_search failed for request 4711")
            tools.execute("local_index")
            run.set_output("answered")
        # A gate that says no: the operation is 'blocked', which is not an error.
        gates.check("ExternalSendGate", False, "no consent for outbound email")
        ctx.set_output("success", reason="user requested tactical")


def main() -> None:
    log.info("agent starting")
    answer("What changed in the altitude plan?")
    log.info("agent done")


if __name__ == "__main__":
    main()
