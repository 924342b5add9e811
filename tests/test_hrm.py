"""The HRM tracer on real OTel SDK spans, captured in memory."""

from __future__ import annotations

import asyncio
import inspect
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from membrane_otel import settings as config
from membrane_otel.logs._redact import Redactor
from membrane_otel.spans._hrm import HRMTracer
from membrane_otel.spans._layers import SUMMARY_LIMIT, event_id, layer_of

EVENT_ID = re.compile(r"^(alt|foc|rsn|lrn|mem|sys)_\d{10}_[0-9a-f]{4}$")


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    p = TracerProvider()
    p.add_span_processor(SimpleSpanProcessor(exporter))
    return p


@pytest.fixture
def tracer(provider: TracerProvider) -> HRMTracer:
    return HRMTracer(True, tracer_provider=provider, redactor=Redactor())


@pytest.fixture
def settings_restored() -> Iterator[None]:
    yield
    config.set_settings(None)


def spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return list(exporter.get_finished_spans())


def by_input(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {str(attrs(s)["hrm.input_summary"]): s for s in spans(exporter) if "hrm.layer" in attrs(s)}


def attrs(span: ReadableSpan) -> dict[str, object]:
    return dict(span.attributes or {})


# --------------------------------------------------------------------------- attributes


def test_span_carries_the_seed_fields(tracer: HRMTracer, exporter: InMemorySpanExporter) -> None:
    """A span is named layer.operation and carries every hrm.* attribute of the seed's TraceEvent."""
    with tracer.span("alt", "transition", "altitude.py", "L3→L2") as ctx:
        ctx.set_output("success", reason="user requested tactical")
    (span,) = spans(exporter)
    a = attrs(span)
    assert span.name == "altitude.transition"
    assert a["hrm.layer"] == "altitude" and a["hrm.operation"] == "transition"
    assert a["hrm.component"] == "altitude.py"
    assert a["hrm.input_summary"] == "L3→L2" and a["hrm.output_summary"] == "success"
    assert a["hrm.status"] == "success" and a["hrm.meta.reason"] == "user requested tactical"
    assert EVENT_ID.match(str(a["hrm.event_id"])) and a["hrm.event_id"] == ctx.trace_id
    assert "hrm.parent_event_id" not in a


def test_event_id_has_the_seed_form() -> None:
    """hrm.event_id is {code}_{unix seconds}_{4 hex}."""
    assert re.fullmatch(r"alt_1705180800_[0-9a-f]{4}", event_id("alt", now=lambda: 1705180800.9))


def test_layer_given_by_code_or_name(tracer: HRMTracer, exporter: InMemorySpanExporter) -> None:
    """The layer may be the short code or the long name, in any case."""
    for hrm in ("mem", "memory", "MEMORY", " Mem "):
        with tracer.span(hrm, "read", "manager.py", hrm):
            pass
    assert {attrs(s)["hrm.layer"] for s in spans(exporter)} == {"memory"}
    assert {str(attrs(s)["hrm.event_id"])[:4] for s in spans(exporter)} == {"mem_"}
    assert layer_of("foc") == ("foc", "focus") == layer_of("focus")


def test_unknown_layer_is_a_clear_value_error(tracer: HRMTracer) -> None:
    """An unknown layer names itself and the accepted ones, for span, event and the decorator."""
    with pytest.raises(ValueError, match=r"unknown HRM layer 'altitud': expected one of alt/altitude"):
        tracer.span("altitud", "transition")
    with pytest.raises(ValueError, match="unknown HRM layer"):
        tracer.event("xyz", "read")
    with pytest.raises(ValueError, match="unknown HRM layer"):
        tracer.trace("nope")


def test_summaries_are_cut_to_100_chars(tracer: HRMTracer, exporter: InMemorySpanExporter) -> None:
    """Input and output summaries are at most 100 characters, ending in … when cut."""
    with tracer.span("rsn", "classify", "r.py", "x" * 5000) as ctx:
        ctx.set_output(list(range(1000)))
    a = attrs(spans(exporter)[0])
    assert len(str(a["hrm.input_summary"])) == SUMMARY_LIMIT and str(a["hrm.input_summary"]).endswith("…")
    assert len(str(a["hrm.output_summary"])) <= SUMMARY_LIMIT


def test_summaries_are_redacted_before_they_are_cut(
    tracer: HRMTracer, exporter: InMemorySpanExporter
) -> None:
    """A secret in a summary is replaced whole, even one that straddles the 100-char cut."""
    secret = "sk-live-0000SECRET0000abcdef"
    with tracer.span("sys", "execute", "x.py", "y" * 80 + f" api_key={secret}") as ctx:
        ctx.set_output(f"Authorization: Bearer {secret}")
    a = attrs(spans(exporter)[0])
    for key in ("hrm.input_summary", "hrm.output_summary"):
        assert "sk-live" not in str(a[key]) and "SECRET" not in str(a[key])
    assert str(a["hrm.output_summary"]).endswith("<REDACTED>")


def test_metadata_becomes_redacted_hrm_meta_attributes(
    tracer: HRMTracer, exporter: InMemorySpanExporter
) -> None:
    """Metadata is hrm.meta.*: scalars kept, secret keys masked, structures as redacted JSON."""
    with tracer.span("mem", "write", "manager.py", "k", metadata={"tier": "warm"}) as ctx:
        ctx.set_output(
            "written",
            tokens_saved=45,
            password="hunter2",
            context={"user": "ada", "api_key": "k-123"},
            agents=["a", "b"],
            mixed=[1, "a"],
            odd_keys={(1, 2): "x"},
            missing=None,
        )
    a = attrs(spans(exporter)[0])
    assert a["hrm.meta.tier"] == "warm" and a["hrm.meta.tokens_saved"] == 45
    assert a["hrm.meta.password"] == "<REDACTED>"
    assert a["hrm.meta.context"] == '{"user": "ada", "api_key": "<REDACTED>"}'
    assert a["hrm.meta.agents"] == ("a", "b") and a["hrm.meta.mixed"] == '[1, "a"]'
    assert "hrm.meta.missing" not in a and a["hrm.meta.odd_keys"] == "{(1, 2): 'x'}"


def test_configured_redact_patterns_apply_to_summaries(
    provider: TracerProvider, exporter: InMemorySpanExporter, settings_restored: None
) -> None:
    """The settings' extra redact patterns scrub summaries too."""
    config.set_settings(config.Settings(redact_patterns=("sess-[0-9a-f]+",)))
    tracer = HRMTracer(True, tracer_provider=provider)
    with tracer.span("mem", "read", "m.py", "session sess-deadbeef01"):
        pass
    assert attrs(spans(exporter)[0])["hrm.input_summary"] == "session <REDACTED>"


def test_unprintable_output_does_not_break_the_operation(
    tracer: HRMTracer, exporter: InMemorySpanExporter
) -> None:
    """An object whose __str__ raises gives a placeholder summary, not an exception."""

    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("no")

    with tracer.span("sys", "execute", "x.py", Broken()) as ctx:
        ctx.set_output("ok")
    assert attrs(spans(exporter)[0])["hrm.input_summary"] == "<unprintable Broken>"


# --------------------------------------------------------------------------- status


def test_exception_marks_error_and_reraises(tracer: HRMTracer, exporter: InMemorySpanExporter) -> None:
    """An exception leaving a span marks it error with a redacted exception event, and propagates."""
    err = ConnectionError("refused api_key=sk-live-0000SECRET0000 at 10.0.0.7")
    with pytest.raises(ConnectionError) as caught:
        with tracer.span("sys", "execute", "tools.py", "flaky_search"):
            raise err
    assert caught.value is err
    (span,) = spans(exporter)
    assert attrs(span)["hrm.status"] == "error"
    assert span.status.status_code is StatusCode.ERROR
    (event,) = [e for e in span.events if e.name == "exception"]
    ev = dict(event.attributes or {})
    assert ev["exception.type"] == "ConnectionError"
    assert ev["exception.message"] == "refused api_key=<REDACTED> at 10.0.0.7"
    assert "SECRET" not in str(ev["exception.stacktrace"]) and "raise err" in str(ev["exception.stacktrace"])
    assert "SECRET" not in str(span.status.description)


def test_blocked_is_not_an_error(tracer: HRMTracer, exporter: InMemorySpanExporter) -> None:
    """A gate that says no is 'blocked', with its reason, and the OTel status stays unset."""
    with tracer.span("foc", "gate_check", "gates.py", "ExternalSendGate") as ctx:
        ctx.set_output("denied")
        ctx.block("no consent")
    (span,) = spans(exporter)
    assert attrs(span)["hrm.status"] == "blocked" and attrs(span)["hrm.meta.blocked_reason"] == "no consent"
    assert span.status.status_code is StatusCode.UNSET


def test_explicit_error_status_without_exception(tracer: HRMTracer, exporter: InMemorySpanExporter) -> None:
    """set_status('error') marks the OTel span error; an unknown status is refused."""
    with tracer.span("rsn", "route", "r.py", "q") as ctx:
        ctx.set_status("error")
        with pytest.raises(ValueError, match="unknown HRM status 'failed'"):
            ctx.set_status("failed")
    assert spans(exporter)[0].status.status_code is StatusCode.ERROR


def test_clean_exit_inside_a_span_is_not_an_error(tracer: HRMTracer, exporter: InMemorySpanExporter) -> None:
    """sys.exit(0) ends the operation without failing it."""
    with pytest.raises(SystemExit):
        with tracer.span("sys", "execute", "main.py", "shutdown"):
            raise SystemExit(0)
    assert attrs(spans(exporter)[0])["hrm.status"] == "success"


def test_event_is_a_zero_length_child(tracer: HRMTracer, exporter: InMemorySpanExporter) -> None:
    """tracer.event records a finished child span of the current one, with its status and metadata."""
    with tracer.span("foc", "route", "router.py", "signal") as ctx:
        tracer.event(
            "foc", "consent_check", "consent.py", "send_email", "denied", "blocked", {"allowed": False}
        )
        tracer.event("mem", "read", "m.py", "k", "miss", status="error")
    found = by_input(exporter)
    consent, read = found["send_email"], found["k"]
    assert attrs(consent)["hrm.parent_event_id"] == ctx.trace_id
    assert consent.parent is not None and consent.parent.span_id == found["signal"].context.span_id
    assert attrs(consent)["hrm.status"] == "blocked" and attrs(consent)["hrm.meta.allowed"] is False
    assert attrs(consent)["hrm.output_summary"] == "denied"
    assert read.status.status_code is StatusCode.ERROR
    with pytest.raises(ValueError, match="unknown HRM status"):
        tracer.event("mem", "read", status="oops")


# --------------------------------------------------------------------------- decorator


def test_decorator_skips_self_and_records_result(tracer: HRMTracer, exporter: InMemorySpanExporter) -> None:
    """A traced method's input summary is its arguments without self; the output is its result."""

    class Reasoner:
        @tracer.trace("rsn", "classify", "reasoner.py")
        def classify(self, text: str, strict: bool = False) -> str:
            return "question"

        @classmethod
        @tracer.trace("rsn")
        def build(cls, n: int) -> int:
            return n * 2

    Reasoner().classify("Why?", strict=True)
    Reasoner().classify("plain text")
    assert Reasoner.build(21) == 42
    found = by_input(exporter)
    assert set(found) == {"'Why?', strict=True", "plain text", "21"}
    assert attrs(found["plain text"])["hrm.output_summary"] == "question"
    assert found["21"].name == "reasoning.build" and attrs(found["21"])["hrm.output_summary"] == "42"


def test_decorator_traces_async_functions(tracer: HRMTracer, exporter: InMemorySpanExporter) -> None:
    """An async function is traced around its whole await, and keeps being a coroutine function."""

    @tracer.trace("mem", "read", summarize=lambda key: f"ns.{key}")
    async def read(key: str) -> str:
        with tracer.span("mem", "lookup", "m.py", key):
            await asyncio.sleep(0)
        return "hit"

    assert inspect.iscoroutinefunction(read)
    assert asyncio.run(read("k1")) == "hit"
    found = by_input(exporter)
    assert attrs(found["ns.k1"])["hrm.output_summary"] == "hit"
    assert attrs(found["k1"])["hrm.parent_event_id"] == attrs(found["ns.k1"])["hrm.event_id"]


def test_decorator_marks_errors_and_reraises(tracer: HRMTracer, exporter: InMemorySpanExporter) -> None:
    """An exception from a traced function marks its span error and reaches the caller."""

    @tracer.trace("sys", "execute")
    def fail() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError):
        fail()
    assert attrs(spans(exporter)[0])["hrm.status"] == "error"


def test_decorator_refuses_generator_functions(tracer: HRMTracer) -> None:
    """A generator's work happens after the call, so decorating one is refused with advice."""
    with pytest.raises(TypeError, match="use `with tracer.span"):

        @tracer.trace("mem")
        def rows() -> Iterator[int]:
            yield 1


# --------------------------------------------------------------------------- off


def test_off_returns_the_shared_noop(exporter: InMemorySpanExporter, provider: TracerProvider) -> None:
    """Tracing off: span() returns one shared no-op whose context is falsy, and nothing is exported."""
    off = HRMTracer(False, tracer_provider=provider)
    first, second = off.span("alt", "transition", "a.py", "x"), off.span("mem", "write")
    assert first is second
    with first as ctx:
        assert not ctx and ctx.trace_id is None
        ctx.set_output("ignored", any_key=1)
        ctx.block("ignored")
    off.event("alt", "evaluate")

    @off.trace("alt")
    def plan() -> str:
        return "planned"

    assert plan() == "planned"
    assert spans(exporter) == []


def test_off_path_takes_no_keyword_dict() -> None:
    """span() has no **kwargs, so a call with tracing off builds no dict (metadata is a parameter)."""
    kinds = {p.kind for p in inspect.signature(HRMTracer.span).parameters.values()}
    assert inspect.Parameter.VAR_KEYWORD not in kinds


def test_enabled_follows_settings_until_forced(
    provider: TracerProvider, exporter: InMemorySpanExporter, settings_restored: None
) -> None:
    """enabled=None reads the settings' trace flag; set_enabled(None) re-reads it."""
    tracer = HRMTracer(tracer_provider=provider)
    config.set_settings(config.Settings(trace=False))
    assert tracer.enabled is False
    config.set_settings(config.Settings(trace=True))
    assert tracer.enabled is False, "the answer is cached until re-read"
    tracer.set_enabled(None)
    with tracer.span("alt", "plan"):
        pass
    assert len(spans(exporter)) == 1


# --------------------------------------------------------------------------- context


def test_hrm_parent_survives_a_non_hrm_span_between(
    tracer: HRMTracer, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A child's hrm parent id is the nearest HRM span, its OTel parent the nearest span."""
    plain = provider.get_tracer("http")
    with tracer.span("alt", "execute", "loop.py", "outer") as outer:
        with plain.start_as_current_span("GET /search"):
            with tracer.span("mem", "read", "m.py", "inner"):
                pass
    found = by_input(exporter)
    http = next(s for s in spans(exporter) if s.name == "GET /search")
    inner = found["inner"]
    assert attrs(inner)["hrm.parent_event_id"] == outer.trace_id
    assert inner.parent is not None and inner.parent.span_id == http.context.span_id


def test_asyncio_tasks_keep_their_own_parents(tracer: HRMTracer, exporter: InMemorySpanExporter) -> None:
    """Tasks under gather, interleaving at every await, each nest under their own span only."""

    async def task(n: int) -> None:
        with tracer.span("rsn", "classify", "r.py", f"task{n}"):
            await asyncio.sleep(0)
            with tracer.span("lrn", "pattern_match", "l.py", f"pattern{n}"):
                await asyncio.sleep(0)
                tracer.event("mem", "read", "m.py", f"read{n}")
                await asyncio.sleep(0)
            await asyncio.sleep(0)

    async def main() -> str:
        with tracer.span("alt", "plan", "planner.py", "root") as root:
            await asyncio.gather(*(task(n) for n in range(6)))
            return str(root.trace_id)

    root_id = asyncio.run(main())
    found = by_input(exporter)
    for n in range(6):
        task_span, pattern, read = found[f"task{n}"], found[f"pattern{n}"], found[f"read{n}"]
        assert attrs(task_span)["hrm.parent_event_id"] == root_id
        assert attrs(pattern)["hrm.parent_event_id"] == attrs(task_span)["hrm.event_id"]
        assert attrs(read)["hrm.parent_event_id"] == attrs(pattern)["hrm.event_id"]
        assert pattern.parent is not None and pattern.parent.span_id == task_span.context.span_id
        assert read.parent is not None and read.parent.span_id == pattern.context.span_id
    assert len({s.context.trace_id for s in spans(exporter)}) == 1


def test_threads_tracing_concurrently_never_share_parents(
    tracer: HRMTracer, exporter: InMemorySpanExporter
) -> None:
    """Two threads nesting spans in lock-step each get their own roots and children."""
    step = threading.Barrier(2, timeout=10)

    def worker(name: str) -> None:
        for i in range(20):
            with tracer.span("alt", "transition", "a.py", f"{name}-root{i}"):
                step.wait()
                with tracer.span("mem", "write", "m.py", f"{name}-child{i}"):
                    step.wait()

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    found = by_input(exporter)
    assert len(found) == 80
    for name in ("a", "b"):
        for i in range(20):
            root, child = found[f"{name}-root{i}"], found[f"{name}-child{i}"]
            assert root.parent is None and "hrm.parent_event_id" not in attrs(root)
            assert attrs(child)["hrm.parent_event_id"] == attrs(root)["hrm.event_id"]
            assert child.context.trace_id == root.context.trace_id


def test_new_thread_is_a_child_under_the_threading_instrumentation(
    tracer: HRMTracer, exporter: InMemorySpanExporter
) -> None:
    """With the threading instrumentation the distro enables, a thread started inside a span is its child."""
    from opentelemetry.instrumentation.threading import ThreadingInstrumentor

    instrumentor = ThreadingInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()
    with tracer.span("sys", "execute", "pool.py", "caller"):
        t = threading.Thread(target=lambda: tracer.event("mem", "read", "m.py", "in thread"))
        t.start()
        t.join(timeout=10)
    found = by_input(exporter)
    child, caller = found["in thread"], found["caller"]
    assert child.parent is not None and child.parent.span_id == caller.context.span_id
    assert attrs(child)["hrm.parent_event_id"] == attrs(caller)["hrm.event_id"]


def test_wrap_carries_the_parent_into_worker_threads(
    tracer: HRMTracer, exporter: InMemorySpanExporter
) -> None:
    """tracer.wrap(fn) run by several pool threads at once makes every span a child of the caller."""

    def work(i: int) -> int:
        with tracer.span("mem", "read", "m.py", f"item{i}"):
            tracer.event("lrn", "pattern_match", "l.py", f"match{i}")
        return i

    with tracer.span("sys", "execute", "pool.py", "fanout") as caller:
        with ThreadPoolExecutor(4) as pool:
            assert sorted(pool.map(tracer.wrap(work), range(12))) == list(range(12))
    found = by_input(exporter)
    fanout = found["fanout"]
    for i in range(12):
        item, match = found[f"item{i}"], found[f"match{i}"]
        assert attrs(item)["hrm.parent_event_id"] == caller.trace_id
        assert item.parent is not None and item.parent.span_id == fanout.context.span_id
        assert attrs(match)["hrm.parent_event_id"] == attrs(item)["hrm.event_id"]
    assert trace.get_current_span() is trace.INVALID_SPAN, "the caller's context was restored"
