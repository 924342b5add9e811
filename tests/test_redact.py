"""Secret redaction: every form real logs leak is scrubbed, look-alike prose is left alone."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest

from membrane_otel._internal import counters
from membrane_otel.logs._redact import PLACEHOLDER, Redactor, redact_secrets, redact_value
from tests._helpers import clean_env

R = PLACEHOLDER

# Test tokens are assembled from parts so that no secret scanner flags this file.
GHP = "ghp" + "_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    + ".eyJzdWIiOiIxMjM0NTY3ODkwIn0"
    + ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM_BODY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\nq1w2e3r4t5y6u7i8o9p0\n"

# (input, expected output): each built-in form, as the seeds show their result.
REDACTED = [
    # The seed's five patterns.
    ('{"token": "abc123"}', f'{{"token": "{R}"}}'),
    ('{"api_key": "k-9f8e7d"}', f'{{"api_key": "{R}"}}'),
    ('{"password": "hunter2"}', f'{{"password": "{R}"}}'),
    ("Authorization: Bearer abc.def.ghi", f"Authorization: Bearer {R}"),
    ("https://user:pass@host/path", f"https://{R}:{R}@host/path"),
    # key=value, keys case-insensitive, prefixed keys, every secret word.
    ("password=hunter2 user=bob", f"password={R} user=bob"),
    ("PASSWORD=hunter2", f"PASSWORD={R}"),
    ("DB_PASSWORD=s3cr3t retries=3", f"DB_PASSWORD={R} retries=3"),
    ("passwd=x1y2", f"passwd={R}"),
    ("pwd=x1y2", f"pwd={R}"),
    ("passphrase = open sesame", f"passphrase = {R} sesame"),
    ("secret=abc", f"secret={R}"),
    ("client_secret=abc", f"client_secret={R}"),
    ("clientSecret: abc", f"clientSecret: {R}"),
    ("token=abc", f"token={R}"),
    ("access_token=abc", f"access_token={R}"),
    ("refresh_token=abc", f"refresh_token={R}"),
    ("accessToken=abc", f"accessToken={R}"),
    ("api_key=abc", f"api_key={R}"),
    ("apikey=abc", f"apikey={R}"),
    ("api-key=abc", f"api-key={R}"),
    ("X-Api-Key: abc123", f"X-Api-Key: {R}"),
    ("apiKey := abc", f"apiKey := {R}"),
    ("private_key=abc", f"private_key={R}"),
    ("secret_key => 'abc'", f"secret_key => '{R}'"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCY", f"aws_secret_access_key = {R}"),
    # JSON, YAML and Python dict-repr forms keep the key and the quoting.
    ('{"password":"a b c","user":"bob"}', f'{{"password":"{R}","user":"bob"}}'),
    ('{"Password": "with \\"escaped\\" quotes"}', f'{{"Password": "{R}"}}'),
    ("{'password': 'hunter2', 'user': 'bob'}", f"{{'password': '{R}', 'user': 'bob'}}"),
    ("Config(password='hunter2', host='db')", f"Config(password='{R}', host='db')"),
    ("db:\n  password: hunter2\n  host: db\n", f"db:\n  password: {R}\n  host: db\n"),
    ('token: "abc"', f'token: "{R}"'),
    ('"body": "{\\"password\\": \\"hunter2\\"}"', f'"body": "{{\\"password\\": \\"{R}\\"}}"'),
    ('{"password": "unterminated', f'{{"password": "{R}'),
    # Authorization headers, any scheme and form.
    ("Authorization: Basic dXNlcjpwYXNz", f"Authorization: Basic {R}"),
    ("authorization=Bearer xyz", f"authorization=Bearer {R}"),
    ('{"Authorization": "Bearer abc"}', f'{{"Authorization": "Bearer {R}"}}'),
    ("{'authorization': 'token ghx'}", f"{{'authorization': 'token {R}'}}"),
    ("Proxy-Authorization: Basic dXNlcjpwYXNz", f"Proxy-Authorization: Basic {R}"),
    ("AUTHORIZATION: abc", f"AUTHORIZATION: {R}"),
    ("curl -H 'Bearer 9f8e7d6c5b4a39281706f5e4'", f"curl -H 'Bearer {R}'"),
    # URL user-info, any scheme.
    ("postgres://app:pw@db:5432/main", f"postgres://{R}:{R}@db:5432/main"),
    ("postgresql://app:p@ss@db/main", f"postgresql://{R}:{R}@db/main"),
    ("redis://:s3cret@cache:6379/0", f"redis://:{R}@cache:6379/0"),
    ("amqp://guest:guest@mq//", f"amqp://{R}:{R}@mq//"),
    ("ftp://anon:x@files.example.org/pub", f"ftp://{R}:{R}@files.example.org/pub"),
    ("mongodb+srv://u:p@cluster0.x.net/db", f"mongodb+srv://{R}:{R}@cluster0.x.net/db"),
    ("git clone https://oauth2token@git.example.com/r.git", f"git clone https://{R}@git.example.com/r.git"),
    # Cookies.
    ("Cookie: sid=abc; csrftoken=xyz", f"Cookie: {R}"),
    ("Set-Cookie: session=abc; Path=/; HttpOnly", f"Set-Cookie: {R}"),
    ("{'Cookie': 'sid=abc; theme=dark'}", f"{{'Cookie': '{R}'}}"),
    # Query-string tokens and signatures.
    ("GET /cb?token=abc&page=2", f"GET /cb?token={R}&page=2"),
    ("GET /x?a=1&access_token=abc", f"GET /x?a=1&access_token={R}"),
    ("GET /x?a=1&api_key=abc&b=2", f"GET /x?a=1&api_key={R}&b=2"),
    (
        "https://acct.blob.core.windows.net/c/b?sv=2022&sig=abc%2Fdef&se=x",
        f"https://acct.blob.core.windows.net/c/b?sv=2022&sig={R}&se=x",
    ),
    (
        "https://b.s3.amazonaws.com/k?X-Amz-Credential=AK%2F2024&X-Amz-Signature=ab12",
        f"https://b.s3.amazonaws.com/k?X-Amz-Credential={R}&X-Amz-Signature={R}",
    ),
    ("/hook?signature=abc123", f"/hook?signature={R}"),
    ("/login?user=bob&password=hunter2", f"/login?user=bob&password={R}"),
    ("https://maps.example.com/api?key=abc123&q=x", f"https://maps.example.com/api?key={R}&q=x"),
    # Well-known token formats.
    ("key AKIAIOSFODNN7EXAMPLE used", f"key {R} used"),
    ("ASIAY34FZKBOKMUTVV7A", R),
    ("aws_access_key_id=AKIAIOSFODNN7EXAMPLE", f"aws_access_key_id={R}"),
    ("gcp AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI ok", f"gcp {R} ok"),
    (f"github {GHP}", f"github {R}"),
    ("gho" + "_" + "16C7e42F292c6912E7710c838347Ae178B4a", R),
    ("github_pat_" + "11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", R),
    ("glpat-" + "xYz12AbC34dEf56GhI78", R),
    ("xoxb-" + "1234567890-0987654321-AbCdEfGhIjKl", R),
    ("xoxp-" + "1234567890-0987654321-AbCdEf", R),
    ("xapp-1-" + "A0123456789-abcdef", R),
    (
        "post to https://hooks.slack.com/services/" + "T0000/B0000/XXXXXXXX now",
        f"post to https://hooks.slack.com/{R} now",
    ),
    ("sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc", R),
    ("stripe=sk_test_" + "4eC39HqLyjWDarjtT1zdp7dc", f"stripe={R}"),
    ("rk_live_" + "4eC39HqLyjWDarjtT1zdp7dc", R),
    ("whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", R),
    ("OPENAI key sk-" + "proj-AbCdEfGhIjKlMnOpQrStUvWx", f"OPENAI key {R}"),
    ("sk-" + "ant-api03-AbCdEfGhIjKlMnOpQrStUvWx-yz", R),
    (f"jwt={JWT}", f"jwt={R}"),
    (f"id {JWT} end", f"id {R} end"),
    (
        f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}-----END RSA PRIVATE KEY-----\nnext line",
        f"-----BEGIN RSA PRIVATE KEY-----{R}-----END RSA PRIVATE KEY-----\nnext line",
    ),
    (f"-----BEGIN PRIVATE KEY-----\n{PEM_BODY}", f"-----BEGIN PRIVATE KEY-----{R}-----END PRIVATE KEY-----"),
    (
        '{"private_key": "-----BEGIN PRIVATE KEY-----\\nMIIEv\\n-----END PRIVATE KEY-----\\n"}',
        f'{{"private_key": "{R}"}}',
    ),
    (
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=Eby8vdM02xNO+cmd/q==;EndpointSuffix=core",
        f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={R};EndpointSuffix=core",
    ),
    (
        "Endpoint=sb://ns/;SharedAccessKeyName=root;SharedAccessKey=abc+def=",
        f"Endpoint=sb://ns/;SharedAccessKeyName=root;SharedAccessKey={R}",
    ),
    ("Server=db;User Id=sa;Password=Pa55w0rd;", f"Server=db;User Id=sa;Password={R};"),
]

# Text that only looks alike: unchanged.
BENIGN = [
    "token bucket refilled",
    "password reset email sent",
    "the secret to good tests",
    "tokens_saved=45",
    "token_count=3",
    "max_tokens=100",
    "max_tokens: 100",
    '{"prompt_tokens": 12, "completion_tokens": 40}',
    "Bearer of bad news",
    "bearer token missing",
    "authorization failed for user bob",
    "KeyError: 'token'",
    "secretary: Mrs Smith",
    "password.min_length=12",
    "token.expiry=3600",
    '{"password": null, "token": ""}',
    "{'password': None}",
    "pk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
    "task-1234567890abcdefghijklmn",
    "https://api.example.com/v1/messages?page=2&limit=50",
    "mail bob@example.com about http://example.com:8080/x",
    "cookies eaten: 3",
    "cache_key=user:17 sort_key=name",
    "see https://example.com/@user",
    "Set-Cookie header was missing",
    "sha 3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a",
    "",
]


@pytest.mark.parametrize(("text", "expected"), REDACTED)
def test_secret_form_is_redacted(text: str, expected: str) -> None:
    """Each secret form becomes <REDACTED>, keeping its key, scheme and quoting."""
    assert redact_secrets(text) == expected


@pytest.mark.parametrize("text", BENIGN)
def test_lookalike_text_is_unchanged(text: str) -> None:
    """Text that only looks like a secret passes through untouched."""
    assert redact_secrets(text) == text


@pytest.mark.parametrize(("text", "expected"), REDACTED)
def test_redaction_is_idempotent(text: str, expected: str) -> None:
    """Redacting redacted text changes nothing (records may pass the scrubber twice)."""
    assert redact_secrets(expected) == expected


def test_several_secrets_in_one_line() -> None:
    """Every secret in a line goes, and the text between them stays."""
    line = f"user=bob password=hunter2 url=postgres://app:pw@db/x auth={GHP} status=500"
    assert redact_secrets(line) == f"user=bob password={R} url=postgres://{R}:{R}@db/x auth={R} status=500"


@pytest.mark.parametrize(("text", "expected"), REDACTED[::7])
def test_secret_inside_a_long_text_is_redacted(text: str, expected: str) -> None:
    """Long texts (which skip the short-string prefilter) are redacted the same way."""
    pad = "lorem ipsum dolor sit amet " * 40
    assert redact_secrets(f"{pad}{text}\n{pad}") == f"{pad}{expected}\n{pad}"


def test_non_ascii_text_whose_lowercase_changes_length() -> None:
    """Text whose lowercase is longer (dotted capital I) is still redacted correctly."""
    text = "İstanbul PASSWORD=hunter2 ok"
    assert len(text.lower()) != len(text)
    assert redact_secrets(text) == f"İstanbul PASSWORD={R} ok"


def test_extra_pattern_string_replaces_whole_match() -> None:
    """A configured string pattern replaces each match with <REDACTED>."""
    redactor = Redactor(extra_patterns=[r"CUST-\d{6}"])
    assert redactor("customer CUST-123456 failed") == f"customer {R} failed"


def test_extra_pattern_pair_keeps_groups() -> None:
    """A (pattern, replacement) pair is applied like re.sub, as the seed's example shows."""
    redactor = Redactor(extra_patterns=[(r"(pin=)\d+", r"\1<REDACTED>")])
    assert redactor("card pin=1234 ok") == f"card pin={R} ok"


def test_extra_patterns_run_after_builtins() -> None:
    """Built-in rules still apply when extra patterns are configured."""
    redactor = Redactor(extra_patterns=["internal-[a-z]+"])
    assert redactor("password=x internal-host") == f"password={R} {R}"


def test_invalid_extra_pattern_is_a_clear_error() -> None:
    """A bad configured regex fails at construction, naming the pattern."""
    with pytest.raises(ValueError, match=r"redaction pattern '\(unclosed'"):
        Redactor(extra_patterns=["(unclosed"])


def test_extra_callback_runs_last() -> None:
    """The extra callback sees the already-redacted text."""
    seen: list[str] = []

    def callback(text: str) -> str:
        seen.append(text)
        return text.replace("alice", "<USER>")

    assert Redactor(extra=callback)("alice password=x") == f"<USER> password={R}"
    assert seen == [f"alice password={R}"]


def test_failing_callback_fails_closed() -> None:
    """If the callback raises, the whole text is withheld and the failure counted."""

    def broken(text: str) -> str:
        raise RuntimeError("boom")

    before = counters.get("redact_errors")
    assert Redactor(extra=broken)("anything at all") == R
    assert counters.get("redact_errors") == before + 1


def test_redact_value_recurses_into_containers() -> None:
    """Strings inside lists, tuples and nested dicts are redacted; other values stay."""
    value = {"msg": "password=x", "items": ["token=y", ("Bearer abcdef0123456789xyz",)], "n": 3, "ok": True}
    assert redact_value(value) == {
        "msg": f"password={R}",
        "items": [f"token={R}", (f"Bearer {R}",)],
        "n": 3,
        "ok": True,
    }


def test_redact_value_masks_values_of_secret_keys() -> None:
    """A bare value under a key that names a secret is replaced whole."""
    attrs = {
        "password": "hunter2",
        "http.request.header.authorization": ["Basic dXNlcjpwYXNz"],
        "apiKey": "abc",
        "db.password": "",
        "max_tokens": 100,
        "token_count": "3",
        "user": "bob",
    }
    assert redact_value(attrs) == {
        "password": R,
        "http.request.header.authorization": [R],
        "apiKey": R,
        "db.password": "",
        "max_tokens": 100,
        "token_count": "3",
        "user": "bob",
    }


def test_redact_value_keeps_container_types() -> None:
    """A tuple stays a tuple and a list a list (OTel attributes may be either)."""
    assert redact_value(("a", "token=x")) == ("a", f"token={R}")
    assert redact_value(["a"]) == ["a"]


def test_redact_value_with_a_configured_redactor() -> None:
    """redact_value accepts the redactor to use, as the log processor passes it."""
    redactor = Redactor(extra_patterns=["acme-[0-9]+"])
    assert redact_value({"m": "id acme-42"}, redactor) == {"m": f"id {R}"}


def test_redact_value_survives_a_cycle() -> None:
    """A self-referencing payload is cut off instead of recursing forever."""
    cyclic: list[object] = ["password=x"]
    cyclic.append(cyclic)
    out = redact_value(cyclic)
    assert out[0] == f"password={R}"


def _typical_line() -> str:
    line = (
        "2025-10-29 12:00:00,123 INFO orchestration.services.queue_poller [pid=41231 thread=MainThread] "
        "processed batch batch_id=8f2a61c0d9e4 items=25 duration_ms=153.2 tokens_saved=45 max_tokens=1000 "
        "model=claude-3-5-sonnet url=https://api.example.com/v1/messages?page=2&limit=50 status=200 "
        "citizen=code_substrate_orchestration_scripts_resurrect_all_citizens_py retries=0 queue_depth=17 "
    )
    while len(line) < 1024:
        line += "stimulus injected into substrate with novelty 0.25 and trust 0.9; "
    return line[:1024]


def test_typical_line_cost_is_reported() -> None:
    """Micro-check (prints, never asserts a time): median cost of redacting a 1 KB log line."""
    line = _typical_line()
    assert redact_secrets(line) == line
    for _ in range(200):
        redact_secrets(line)
    samples = []
    for _ in range(2000):
        t0 = time.perf_counter_ns()
        redact_secrets(line)
        samples.append(time.perf_counter_ns() - t0)
    print(f"\nredact_secrets, 1 KB typical line: median {statistics.median(samples) / 1000:.1f} us")


def test_a_sequence_of_numbers_is_passed_through_without_a_look_at_each_item() -> None:
    """A list of a million ints in ``extra`` went item by item through the redactor on the
    caller's thread; numbers hold no text: the same object comes back. Anything else in the
    sequence (text, a str subclass, a nested list) is still redacted."""
    from membrane_otel.logs._redact import default_redactor as r

    numbers = list(range(100_000)) + [1.5, True, None]
    assert r.redact_value(numbers) is numbers
    assert r.redact_value((1, 2)) == (1, 2)

    class Text(str):
        pass

    assert r.redact_value([1, Text("password=hunter2")]) == [1, "password=<REDACTED>"]
    assert r.redact_value([1, ["token=ghp_" + "a" * 36]]) == [1, ["token=<REDACTED>"]]
    assert r.redact_value(("--password", "hunter2", 3)) == ("--password", "<REDACTED>", 3)


def test_a_bare_uuid_is_left_as_it_is_so_the_resource_check_may_skip_it() -> None:
    """The resource is redacted at start-up, its service.instance.id (a UUID) not looked at:
    that is only right while the rules leave a bare UUID as it is (a keyed one is still masked)."""
    import uuid

    from membrane_otel.logs._redact import default_redactor as r

    for value in (str(uuid.uuid4()) for _ in range(500)):
        assert r(value) == value
        assert r(f"api_key={value}") == "api_key=<REDACTED>"


def test_configuring_with_the_default_resource_builds_no_redaction_rules(tmp_path: Path) -> None:
    """Redacting the resource at start-up must not compile the rules (~80 ms of every start-up:
    the SDK's UUID service.instance.id looked like a token to the prefilter)."""
    import subprocess
    import sys

    code = (
        "import membrane_otel; membrane_otel.configure()\n"
        "from membrane_otel.logs import _redact\n"
        "print('rules built:', _redact._rules is not None)\n"
    )
    env = clean_env(tmp_path, OTEL_SERVICE_NAME="plain-service")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert "rules built: False" in done.stdout, done.stdout + done.stderr[-2000:]
