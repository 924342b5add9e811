"""Where a secret sits by its syntax, not its shape: key/value pairs (env, INI, YAML, JSON, Python
and Go reprs, HTTP headers), URLs and DSNs, command lines, SQL, protocol lines, prose in several
languages, PEM blocks. Each rule starts with a literal (see :mod:`membrane_otel.logs._redact_rules`).
"""

from __future__ import annotations

import re

from membrane_otel.logs._redact_keys import PLACEHOLDER, is_masked
from membrane_otel.logs._redact_rules import (
    KEY_END,
    KEY_LOOKBEHIND,
    SEP,
    TOKEN_NOT_CURSOR,
    VALUE,
    Out,
    Rule,
    ci,
    kv,
    replace_auth_blob,
    replace_authorization,
    replace_basic,
    replace_keyed,
    replace_pem,
    replace_phrase,
    replace_pwd,
    replace_userinfo,
    replace_value,
)

# "Das Passwort ist geheim123", "le mot de passe est …", "la contraseña es …": a verb, then a value.
_PHRASE_SEP = r"(?P<sep>[ \t]+(?:is|ist|lautet|est|es|era|é|è|är|er|jest|was|wird|sera|será)[ \t]+)"
_PHRASE_VALUE = r"""["'«“]?[ \t\u00a0]*(?P<uv>[^\s"'»”,;]+)"""
# A quoted argument of a call, for positional credentials: Client('AC…', 'token').
_ARG = re.compile(r"""\s*(?:b?(['"])(?P<q>[^'"\r\n]*)\1|(?P<bare>[^,()\s]+))\s*""")
# Protocol words that are not the credential: AUTH PLAIN <blob>, redis AUTH default <pw>.
_AUTH_MECHANISMS = frozenset(("PLAIN", "LOGIN", "CRAM-MD5", "DIGEST-MD5", "XOAUTH2", "OAUTHBEARER", "GSSAPI"))


def _replace_call_args(m: re.Match[str], text: str) -> Out:
    """Every argument after the first (the user, the sid) of a credentials call goes."""
    args = text[m.start("args") : m.end("args")]
    pieces = args.split(",")
    if len(pieces) < 2:
        return None
    out = [pieces[0]]
    changed = False
    for piece in pieces[1:]:
        a = _ARG.fullmatch(piece)
        if a is None or "=" in piece:  # keyword arguments are the key/value rules' business
            out.append(piece)
            continue
        value = a.group("q") if a.group("q") is not None else a.group("bare")
        quoted = a.group("q") is not None
        if (quoted and value and not is_masked(value)) or (
            not quoted and len(value) >= 12 and any(c.isdigit() for c in value)
        ):
            lo, hi = a.span("q" if quoted else "bare")
            out.append(piece[:lo] + PLACEHOLDER + piece[hi:])
            changed = True
        else:
            out.append(piece)
    if not changed:
        return None
    return text[m.start() : m.start("args")] + ",".join(out) + text[m.end("args") : m.end()]


def _replace_auth_line(m: re.Match[str], text: str) -> Out:
    words = m.group("rest").split(" ")
    keep = [w for w in words if w in _AUTH_MECHANISMS or w == "default"]
    if len(keep) == len(words):
        return None
    return text[m.start() : m.start("rest")] + " ".join([*keep, PLACEHOLDER])


def _replace_login_line(m: re.Match[str], text: str) -> Out:
    return text[m.start() : m.start("cred")] + PLACEHOLDER


_DSN_STOPS = tuple(" \t\r\n\"'=(,;<>[{")


def _replace_dsn(m: re.Match[str], text: str) -> Out:
    """``user:pw@tcp(host)/db``, ``user:pw@host:5432``: find ``user:`` before the ``@``."""
    at = m.start()
    if text.endswith(PLACEHOLDER, 0, at):
        return None  # the URL rule already took this userinfo
    floor = max(0, at - 128)  # bounded: userinfo is short, so a hostile line stays linear
    window = text[floor:at]
    start = floor + 1 + max(map(window.rfind, _DSN_STOPS))
    userinfo = text[start:at]
    if "/" in userinfo or ":" not in userinfo:  # URLs are url_userinfo's; "bob@x" names a user
        return None
    user, _, password = userinfo.partition(":")
    if not user or not password or user.lower() in ("mailto", "http", "https") or is_masked(password):
        return None
    if not all(c.isalnum() or c in "_.-" for c in user):
        return None
    return start, f"{user}:{PLACEHOLDER}@"


def _replace_word_or_phrase(m: re.Match[str], text: str) -> Out:
    """``пароль: x`` is a pair (any value); ``contraseña es x`` a phrase (a value that looks like one)."""
    sep = m.group("sep")
    if any(c in sep for c in ":=："):
        return replace_value(m, text)
    return replace_phrase(m, text)


# Commands whose -p (redis-cli's -a) is a password, not a port: the flag within 200 characters
# on the same line (bounded, so a hostile line stays linear).
_SHORT_FLAG = r"""[^\r\n]{0,200}?[ \t]-[%s](?:[ \t]+|(?=[^\s-]))["']?(?P<cred>[^\s"'-][^\s"']*)"""


# Query parameters whose value is a signature or a key (signed URLs, ?key=).
_QUERY_SECRETS = (
    "sig",
    "signature",
    "x-amz-signature",
    "x-amz-credential",
    "x-goog-signature",
    "x-goog-credential",
    "key",
    "apikey",
    "code",
    "client_secret",
)

# The calls whose arguments after the first are credentials ("auth(" covers basicauth( too).
_CALLS = ("client(", "credentials(", "auth(", "login(", "connect(", "authenticate(")

# A segment of 24 characters or more, tried only at the separators ("/" is prepended to the
# path): a class at every position would cost 24 steps a character on a hostile path.
_LONG_SEGMENT = re.compile(r"[/.][^/.]{24}")


def _replace_hook_path(m: re.Match[str], text: str) -> Out:
    """A webhook URL's path is its secret; "hooks/pre-commit" is a file."""
    path = m.group("path")
    if not any(d in path for d in "0123456789") and _LONG_SEGMENT.search("/" + path) is None:
        return None
    return text[m.start() : m.start("path")] + PLACEHOLDER


_FORM_RULES: tuple[Rule, ...] = (
    # First, so the key rules below see a "private_key": "<REDACTED>" and not the block's lines.
    Rule(
        "pem_private_key",
        re.compile(r"-----BEGIN (?P<label>[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?)-----"),
        replace_pem,
    ),
    # Authorization / Proxy-Authorization, any scheme (the scheme stays); Go maps' [Bearer x] too.
    ci(
        "authorization",
        r"authorization" + KEY_END + SEP + r"""(?:\\?["'])?\[?"""
        r"(?P<scheme>(?:bearer|basic|digest|token|negotiate|ntlm|apikey|hmac|aws4-hmac-sha256|sso-key)[ \t]+)?"
        r"""(?P<cred>[^\s"'\\,;&\]]+)""",
        replace_authorization,
    ),
    # A bearer token outside an Authorization header; it must look like one (long, with a
    # digit), so "Bearer of bad news" stays.
    ci(
        "bearer",
        r"bearer(?<![a-z0-9_]bearer)[ \t]+(?P<cred>(?=[a-z._~+/\-]*\d)[a-z0-9._~+/\-]{16,}=*)",
        replace_value,
    ),
    # A bare "Basic <base64 of user:password>", outside a header.
    ci(
        "basic", r"basic(?<![a-z0-9_]basic)[ \t]+(?P<cred>[a-z0-9+/]{8,}={0,2})(?![a-z0-9+/=])", replace_basic
    ),
    # A cookie header's value is a list of secrets: all of it goes, to the end of the line.
    ci(
        "cookie",
        r"cookie" + KEY_END + r"""(?P<sep>\\?["']?[ \t]*[:=][ \t]*)"""
        r"""(?:"(?P<dv>[^"\r\n]*)"?|'(?P<sv>[^'\r\n]*)'?|(?P<uv>[^\s"'][^\r\n"']*))""",
        replace_value,
    ),
    # scheme://user:password@host, any scheme. The password may hold '@': the greedy run
    # backtracks to the last '@' before the path.
    Rule(
        "url_userinfo",
        re.compile(
            r"""://(?<=[A-Za-z0-9+.\-]://)(?P<user>[^\s:/?#@'"<>]*)(?::(?P<password>[^\s/?'"<>]*))?@"""
        ),
        replace_userinfo,
    ),
    # Go / MySQL DSNs and bare user:password@host.
    Rule(
        "dsn_userinfo",
        re.compile(
            r"@(?=[A-Za-z0-9(/])(?!sha256:|sha512:)(?=tcp\(|unix\(|udp\(|\(|/|[A-Za-z0-9][A-Za-z0-9.\-]*(?::\d|/))"
        ),
        _replace_dsn,
    ),
    # Signed URLs (S3, GCS, Azure SAS) and ?key=: the signature or key is the secret.
    ci(
        "query_signature",
        # Starts with the literal "=" (a class first, [?&;], would try every position); the
        # names' last two letters are one cheap lookbehind (most "=" of a line fail there),
        # then the name and the ?, & or ; before it, one lookbehind per name.
        "=(?<=" + "|".join(sorted({name[-2:] + "=" for name in _QUERY_SECRETS})) + ")"
        "(?:" + "|".join(f"(?<=[?&;]{name}=)" for name in _QUERY_SECRETS) + r")(?P<uv>[^&#\s\"'<>]+)",
        replace_value,
        # Gated on "name=" (found in the one pass), not on "=" (in every key=value line).
        needs=tuple(f"{name}=" for name in _QUERY_SECRETS),
    ),
    # Webhook URLs carry their secret in the path.
    ci(
        "webhook_path",
        r"hook(?:s|b2)?/(?:(?<=/webhooks/)|(?<=/webhook/)|(?<=/hooks/)|(?<=webhookb2/))(?P<path>[^\s?#\"'<>]+)",
        _replace_hook_path,
    ),
    # Credentials passed positionally: Client('AC…', 'token'), login('bob', 'pw').
    ci(
        "call_args",
        r"\((?:(?<=client\()|(?<=credentials\()|(?<=auth\()|(?<=login\()|(?<=connect\()|(?<=authenticate\()"
        r"|(?<=basicauth\()|(?<=httpbasicauth\()|(?<=digestauth\())(?P<args>[^()\r\n]{0,512})\)",
        _replace_call_args,
        needs=_CALLS,
    ),
    # Docker's {"auth": "<base64 user:password>"} and other bare "auth" keys holding a blob.
    ci("auth_blob", r"auth(?<![a-z0-9_\-]auth)" + KEY_END + SEP + VALUE, replace_auth_blob),
    # curl -u user:pw, --user user:pw; sshpass -p pw; --password pw, --token tok.
    ci(
        "cli_user", r"-u(?<![a-z0-9_\-]-u)[ \t]*[\"']?[^\s:\"'-][^\s:\"']*:(?P<cred>[^\s\"']+)", replace_value
    ),
    ci("cli_user_long", r"--user[ =][\"']?[^\s:\"']+:(?P<cred>[^\s\"']+)", replace_value),
    ci("mysql_p", r"mysql(?<![a-z0-9_]mysql)" + _SHORT_FLAG % "p", replace_value),
    ci("login_p", r"login(?<=docker login|podman login)" + _SHORT_FLAG % "p", replace_value),
    ci("sshpass_p", r"sshpass" + _SHORT_FLAG % "p", replace_value),
    ci("redis_cli_a", r"redis-cli" + _SHORT_FLAG % "a", replace_value),
    # .netrc: machine host login bob password pw
    ci("netrc", r"machine[ \t]+\S+[ \t]+login[ \t]+\S+[ \t]+password[ \t]+(?P<cred>\S+)", replace_value),
    ci(
        "cli_flag",
        r"--(?:[a-z0-9]+-)*(?:password|passwd|pass|token|secret|api-key|apikey|access-key|secret-key|auth-token"
        r"|client-secret|private-key)[ \t]+[\"']?(?P<cred>[^\s\"'-][^\s\"']*)",
        replace_value,
    ),
    # SQL: IDENTIFIED BY 'pw', WITH PASSWORD 'pw', PASSWORD = 'pw' is a key/value pair below.
    ci(
        "sql_identified",
        r"identified[ \t]+(?:with[ \t]+[a-z_]+[ \t]+)?by[ \t]+(?:password[ \t]+)?'(?P<sv>[^'\r\n]*)'?",
        replace_value,
    ),
    ci("sql_password", r"password[ \t]+'(?P<sv>[^'\r\n]*)'?", replace_value),
    # Protocol lines: AUTH (SMTP, Redis), PASS (FTP, POP3, IRC), LOGIN user pw (IMAP), NickServ.
    Rule("auth_line", re.compile(r"AUTH(?<![A-Za-z0-9_]AUTH)[ \t]+(?P<rest>[^\r\n]+)"), _replace_auth_line),
    Rule(
        "pass_line",
        re.compile(r"PASS(?:(?<=^PASS)|(?<=: PASS)|(?<=> PASS))[ \t]+(?P<cred>[^\s][^\r\n]*)", re.MULTILINE),
        _replace_login_line,
    ),
    Rule(
        "login_line",
        re.compile(r"LOGIN(?<![A-Za-z0-9_]LOGIN)[ \t]+[^\s]+[ \t]+(?P<cred>[^\s][^\r\n]*)"),
        _replace_login_line,
    ),
    Rule(
        "identify_line", re.compile(r"IDENTIFY(?<![A-Za-z0-9_]IDENTIFY)[ \t]+(?P<cred>[^\s]+)"), replace_value
    ),
    # Python tuples and lists of pairs: ('password', 'hunter2').
    ci(
        "pair_tuple",
        r"""\((?=[ \t]*b?['"][a-z0-9_.\-]*?(?:pass(?:word|wd|phrase)?|pwd|secret|token|credential|auth"""
        r"""|(?:api|access|secret|private|signing|encryption|account|session|master|client)[_-]?key))"""
        r"""[ \t]*b?(?P<q>['"])[a-z0-9_.\-]*(?P=q)[ \t]*,[ \t]*""" + VALUE,
        replace_value,
    ),
    # key=value pairs, one regex per literal start.
    ci("password_value", kv(r"pass(?<![/\\]pass)(?:word|wd|phrase|wort|e)"), replace_keyed),
    ci("pass_suffix_value", kv(r"pass(?<=[_\-.]pass)"), replace_keyed),
    ci("pwd_value", kv(r"pwd"), replace_pwd),
    ci("secret_value", kv(r"secret"), replace_keyed),
    # KEY_END first: "tokens_saved" fails there, before the cursor names' lookbehinds.
    ci("token_value", kv(r"token" + KEY_END + TOKEN_NOT_CURSOR), replace_keyed),
    ci("credential_value", kv(r"credential"), replace_keyed),
    ci("key_value", kv(r"key" + KEY_LOOKBEHIND), replace_keyed),
    ci(
        "kennwort_value",
        kv(r"(?:kennwort|wachtwoord|senha)"),
        replace_keyed,
    ),
    # Prose, in several languages: "Passwort ist geheim123", "mot de passe est …".
    ci("password_phrase", r"pass(?:word|wort|e)" + _PHRASE_SEP + _PHRASE_VALUE, replace_phrase),
    ci(
        "kennwort_phrase",
        r"(?:kennwort|wachtwoord|senha)" + _PHRASE_SEP + _PHRASE_VALUE,
        replace_phrase,
    ),
)

# Each rule runs only when its leading literal occurs (read off the pattern: see
# logs/_redact_engine.py); ``needs`` is set above only where that literal is a single common
# character ("=", "(") and a better word exists.
FORM_RULES = _FORM_RULES

# Scripts other than Latin get their own rules, run only on non-ASCII text.
NON_ASCII_RULES: tuple[Rule, ...] = tuple(
    # One rule per word, each starting with its literal (an alternation would try every position).
    ci(
        f"password_word_{word}",
        # One class test first: a run of the word alone ("密码密码…") fails there, at once.
        word + r"(?=[ \t:=：是は为])(?P<sep>[ \t]*(?:[:=：]|[ \t](?:es|это|—|-)|是|は|为))"
        r"[ \t]*[\"'«“「]?(?P<uv>[^\s\"'»”」,;。、]+)",
        _replace_word_or_phrase,
    )
    for word in ("contraseña", "hasło", "пароль", "密码", "パスワード", "비밀번호", "κωδικός")
)
