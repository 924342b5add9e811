"""The redaction corpus: true cases (a secret the redactor must remove, with the fragments that
must not survive) and benign look-alikes (text it must leave exactly as it is).

Generated, deterministically, from a seed: every family and syntax below is a template whose
secret is random, so the corpus tests shapes, not memorised strings. Token families follow the
public gitleaks and detect-secrets rule sets; the syntaxes are the ones log lines carry. Secrets
are built at run time, so no secret scanner flags this file. The hand-written cases of the issue
(every miss it lists) are in :data:`ISSUE_CASES` and :data:`ISSUE_BENIGN`.

``python -m tests.data.secret_corpus`` prints a sample of each kind.
"""

from __future__ import annotations

import base64
import random
import string
from collections.abc import Callable
from dataclasses import dataclass

import pytest

B62 = string.ascii_letters + string.digits
HEX = "0123456789abcdef"
B64 = B62 + "+/"
URLSAFE = B62 + "-_"
UPPER_NUM = string.ascii_uppercase + string.digits


@dataclass(frozen=True, slots=True)
class Case:
    kind: str
    text: str
    # Secrets (or their random bodies: a type hint such as ``sk_live_`` may stay) that must
    # not survive, whole or in part.
    secrets: tuple[str, ...] = ()


class _Gen:
    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)

    def s(self, n: int, alphabet: str = B62) -> str:
        return "".join(self.r.choice(alphabet) for _ in range(n))

    def pick(self, options: list[str] | tuple[str, ...]) -> str:
        return self.r.choice(options)

    def password(self) -> str:
        word = self.pick(["Summer", "dragon", "Falcon", "orange", "Tiger", "sunset", "Qwerty", "Monkey"])
        return word + self.s(self.r.randint(2, 4), string.digits) + self.pick(["!", "#", "", "$", "@x", "_"])

    def value(self) -> str:
        return self.pick([self.password(), self.s(self.r.randint(12, 40)), self.s(32, HEX)])


# --------------------------------------------------------------------------- token families

# kind → (type-hint prefix that may stay, body builder)
_FAMILIES: dict[str, tuple[str, Callable[[_Gen], str]]] = {
    "github_pat": ("ghp_", lambda g: g.s(36)),
    "github_oauth": ("gho_", lambda g: g.s(36)),
    "github_user_to_server": ("ghu_", lambda g: g.s(36)),
    "github_server_to_server": ("ghs_", lambda g: g.s(36)),
    "github_refresh": ("ghr_", lambda g: g.s(36)),
    "github_fine_grained": ("github_pat_", lambda g: g.s(22) + "_" + g.s(59)),
    "gitlab_pat": ("glpat-", lambda g: g.s(20, URLSAFE)),
    "gitlab_deploy": ("gldt-", lambda g: g.s(20, URLSAFE)),
    "gitlab_runner": ("glrt-", lambda g: g.s(20, URLSAFE)),
    "npm": ("npm_", lambda g: g.s(36)),
    "pypi": ("pypi-", lambda g: "AgEIcHlwaS5vcmc" + g.s(70, URLSAFE)),
    "rubygems": ("rubygems_", lambda g: g.s(48, HEX)),
    "clojars": ("CLOJARS_", lambda g: g.s(60, HEX)),
    "stripe_secret": ("sk_live_", lambda g: g.s(24)),
    "stripe_test": ("sk_test_", lambda g: g.s(24)),
    "stripe_restricted": ("rk_live_", lambda g: g.s(24)),
    "stripe_webhook": ("whsec_", lambda g: g.s(32)),
    "square_access": ("sq0atp-", lambda g: g.s(22, URLSAFE)),
    "square_oauth": ("sq0csp-", lambda g: g.s(43, URLSAFE)),
    "shippo": ("shippo_live_", lambda g: g.s(40, HEX)),
    "duffel": ("duffel_live_", lambda g: g.s(43, URLSAFE)),
    "flutterwave": ("FLWSECK_TEST-", lambda g: g.s(32, HEX) + "-X"),
    "openai": ("sk-", lambda g: g.s(48)),
    "openai_project": ("sk-proj-", lambda g: g.s(74, URLSAFE)),
    "anthropic": ("sk-ant-api03-", lambda g: g.s(93, URLSAFE) + "AA"),
    "huggingface": ("hf_", lambda g: g.s(34, string.ascii_letters)),
    "groq": ("gsk_", lambda g: g.s(52)),
    "replicate": ("r8_", lambda g: g.s(37)),
    "perplexity": ("pplx-", lambda g: g.s(48, HEX)),
    "xai": ("xai-", lambda g: g.s(80)),
    "tavily": ("tvly-", lambda g: g.s(32)),
    "pinecone": ("pcsk_", lambda g: g.s(6) + "_" + g.s(60)),
    "langsmith": ("lsv2_pt_", lambda g: g.s(32, HEX) + "_" + g.s(10, HEX)),
    "slack_bot": ("xoxb-", lambda g: g.s(12, string.digits) + "-" + g.s(12, string.digits) + "-" + g.s(24)),
    "slack_user": (
        "xoxp-",
        lambda g: g.s(12, string.digits) + "-" + g.s(13, string.digits) + "-" + g.s(32, HEX),
    ),
    "slack_app": (
        "xapp-",
        lambda g: "1-A" + g.s(10, UPPER_NUM) + "-" + g.s(13, string.digits) + "-" + g.s(64, HEX),
    ),
    "sendgrid": ("SG.", lambda g: g.s(22, URLSAFE) + "." + g.s(43, URLSAFE)),
    "brevo": ("xkeysib-", lambda g: g.s(64, HEX) + "-" + g.s(16)),
    "linear": ("lin_api_", lambda g: g.s(40)),
    "notion": ("ntn_", lambda g: g.s(46)),
    "figma": ("figd_", lambda g: g.s(40, URLSAFE)),
    "typeform": ("tfp_", lambda g: g.s(44, URLSAFE)),
    "readme": ("rdme_", lambda g: g.s(70, HEX)),
    "postman": ("PMAK-", lambda g: g.s(24, HEX) + "-" + g.s(34, HEX)),
    "digitalocean": ("dop_v1_", lambda g: g.s(64, HEX)),
    "vault_service": ("hvs.", lambda g: g.s(90, URLSAFE)),
    "doppler": ("dp.pt.", lambda g: g.s(43)),
    "planetscale": ("pscale_tkn_", lambda g: g.s(43, URLSAFE)),
    "pulumi": ("pul-", lambda g: g.s(40, HEX)),
    "grafana_cloud": ("glc_", lambda g: g.s(40, B62)),
    "grafana_service_account": ("glsa_", lambda g: g.s(32) + "_" + g.s(8, HEX)),
    "supabase": ("sbp_", lambda g: g.s(40, HEX)),
    "flyio": ("fo1_", lambda g: g.s(43, URLSAFE)),
    "newrelic": ("NRAK-", lambda g: g.s(27, UPPER_NUM)),
    "sentry_org": ("sntrys_", lambda g: "eyJpYXQiOjE2" + g.s(60)),
    "prefect": ("pnu_", lambda g: g.s(36)),
    "dockerhub": ("dckr_pat_", lambda g: g.s(27, URLSAFE)),
    "age_secret_key": ("AGE-SECRET-KEY-", lambda g: "1" + g.s(58, "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L")),
    "aws_access_key_id": ("", lambda g: "AKIA" + g.s(16, UPPER_NUM)),
    "aws_session_key_id": ("", lambda g: "ASIA" + g.s(16, UPPER_NUM)),
    "gcp_api_key": ("", lambda g: "AIza" + g.s(35, URLSAFE)),
    "databricks": ("", lambda g: "dapi" + g.s(32, HEX)),
    "alibaba": ("", lambda g: "LTAI" + g.s(20)),
    "mailchimp": ("", lambda g: g.s(32, HEX) + "-us" + str(g.r.randint(1, 20))),
    "azure_ad_client_secret": ("", lambda g: g.s(3) + g.s(1, string.digits) + "Q~" + g.s(34, URLSAFE + "~.")),
    "jwt": (
        "",
        lambda g: "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." + "eyJ" + g.s(40, URLSAFE) + "." + g.s(43, URLSAFE),
    ),
}
_TOKEN_CONTEXTS = (
    "using {t} for the deploy",
    "client initialised with {t}",
    '{{"credentials": ["{t}"]}}',
    "export DEPLOY_CRED={t}",
    "Traceback: AuthError: rejected {t} (401)",
    "args=['--auth', '{t}'] rc=1",
    "headers={{'X-Custom': '{t}'}}",
    "config loaded: value {t}",
    "{t}",
    "ERROR upstream said: invalid key '{t}'",
    "service.name=billing-{t}",  # joined to a word by a hyphen (a resource value a client made up)
)


def _tokens(g: _Gen, per_family: int) -> list[Case]:
    cases = []
    for kind, (prefix, body) in _FAMILIES.items():
        for _ in range(per_family):
            b = body(g)
            token = prefix + b
            text = g.pick(_TOKEN_CONTEXTS).format(t=token)
            cases.append(Case(kind, text, (b,)))
    return cases


# --------------------------------------------------------------------------- key/value syntaxes

_KEYS = (
    "password", "db_password", "DB_PASSWORD", "passwd", "pwd", "api_key", "apiKey", "API_KEY", "x-api-key",
    "client_secret", "clientSecret", "secret", "access_token", "accessToken", "refresh_token", "auth_token",
    "AWS_SECRET_ACCESS_KEY", "private_key", "signing_key", "encryption_key", "SESSION_SECRET", "passphrase",
    "id_token", "GITHUB_TOKEN", "secret_key", "smtp_password", "redis_password", "credential",
)  # fmt: skip
_KV_FORMS: dict[str, tuple[str, ...]] = {
    "env": ("{k}={v}", "export {k}={v}", 'export {k}="{v}"', "{k}='{v}' ./run.sh"),
    "ini": ("{k} = {v}", "[db]\nhost = db.internal\n{k} = {v}\nport = 5432"),
    "yaml": ("{k}: {v}", "db:\n  host: db.internal\n  {k}: {v}\n  port: 5432", '{k}: "{v}"'),
    "json": ('{{"{k}": "{v}"}}', '{{"user": "bob", "{k}":"{v}", "retries": 3}}', '"body": "{{\\"{k}\\": \\"{v}\\"}}"'),
    "python_repr": ("{{'{k}': '{v}', 'host': 'db'}}", "Settings({k}='{v}', debug=False)", "[('user', 'bob'), ('{k}', '{v}')]"),
    "go_map": ("map[{k}:{v} user:bob]", "&{{User:bob {k}:{v} Port:5432}}", "map[{k}:[{v}] Accept:[*/*]]"),
    "http_header": ("{k}: {v}", "> {k}: {v}\r\n> Host: api.example.com"),
    "url_query": ("GET /cb?{k}={v}&page=2 HTTP/1.1", "https://api.example.com/v1/x?user=bob&{k}={v}"),
    "log_kv": ("level=error msg=\"auth failed\" {k}={v} user=bob", "[worker-3] {k}={v} retry=2"),
}  # fmt: skip


def _key_values(g: _Gen, per_form: int) -> list[Case]:
    cases = []
    for syntax, forms in _KV_FORMS.items():
        for _ in range(per_form):
            k = g.pick(_KEYS)
            v = g.value()
            cases.append(Case(f"kv_{syntax}", g.pick(forms).format(k=k, v=v), (v,)))
    return cases


# --------------------------------------------------------------------------- structural forms


def _structural(g: _Gen) -> list[tuple[str, str, tuple[str, ...]]]:
    pw, user, host = g.password(), g.pick(["bob", "app", "svc_user", "admin", "deploy"]), "db.internal"
    tok = g.s(32)
    b64 = base64.b64encode(f"{user}:{pw}".encode()).decode()
    hexsid, hextok = "AC" + g.s(32, HEX), g.s(32, HEX)
    aws_id, aws_secret = "AKIA" + g.s(16, UPPER_NUM), g.s(40, B64)
    jwt_body = "eyJ" + g.s(30, URLSAFE)
    plain = base64.b64encode(f"\0{user}\0{pw}".encode()).decode()
    discord, zapier, telegram = g.s(68, URLSAFE), g.s(7, string.ascii_lowercase), "AA" + g.s(33, URLSAFE)
    return [
        (
            "url_userinfo",
            f"connecting to {g.pick(['postgres', 'mysql', 'redis', 'amqp', 'mongodb+srv', 'https'])}://{user}:{pw}@{host}:5432/app",
            (pw,),
        ),
        ("url_userinfo_token", f"git clone https://x-access-token:{tok}@github.com/org/repo.git", (tok,)),
        ("dsn_go_mysql", f"dsn={user}:{pw}@tcp({host}:3306)/app?parseTime=true", (pw,)),
        ("dsn_go_unix", f"open {user}:{pw}@unix(/var/run/mysqld.sock)/app", (pw,)),
        ("dsn_schemeless", f"DATABASE {user}:{pw}@{host}:5432/app", (pw,)),
        ("dsn_ado", f"Server={host};Database=app;User Id={user};Password={pw};", (pw,)),
        ("curl_u", f"curl -u {user}:{pw} https://api.example.com/v1/me", (pw,)),
        ("curl_user", f"curl --user {user}:{pw} -X POST https://x.example.com", (pw,)),
        (
            "cli_password_flag",
            f"{g.pick(['mysql', 'pg_dump', 'vault', 'app'])} --password {pw} --host {host}",
            (pw,),
        ),
        ("cli_token_flag", f"deploy --token {tok} --env prod", (tok,)),
        ("cli_sshpass", f"sshpass -p '{pw}' ssh {user}@{host}", (pw,)),
        ("cli_mysql", f"mysql -u{user} -p{pw} -h {host} app", (pw,)),
        ("cli_docker_login", f"docker login -u {user} -p {pw} registry.example.com", (pw,)),
        ("cli_redis", f"redis-cli -h {host} -a {pw} PING", (pw,)),
        ("netrc", f"machine api.example.com login {user} password {pw}", (pw,)),
        ("sql_with_password", f"CREATE USER {user} WITH PASSWORD '{pw}';", (pw,)),
        ("sql_identified_by", f"ALTER USER '{user}'@'%' IDENTIFIED BY '{pw}';", (pw,)),
        ("redis_auth", f"AUTH {pw}", (pw,)),
        ("redis_auth_user", f"> AUTH default {pw}", (pw,)),
        ("smtp_auth_plain", f"C: AUTH PLAIN {plain}", (plain,)),
        ("ftp_pass", f"USER {user}\r\nPASS {pw}\r\n", (pw,)),
        ("imap_login", f"a001 LOGIN {user} {pw}", (pw,)),
        ("irc_identify", f"/msg NickServ IDENTIFY {pw}", (pw,)),
        ("authorization_bearer", f"Authorization: Bearer {tok}", (tok,)),
        ("authorization_basic", f"Authorization: Basic {b64}", (b64,)),
        ("authorization_token", f"{{'authorization': 'token {tok}'}}", (tok,)),
        (
            "go_header_map",
            f"req headers: map[Authorization:[Bearer {tok}] Content-Type:[application/json]]",
            (tok,),
        ),
        ("go_header_map_key", f"map[X-Api-Key:[{tok}] Accept:[*/*]]", (tok,)),
        ("bearer_bare", f"retrying with bearer {tok}1", (tok,)),
        ("cookie", f"Cookie: session={tok}; theme=dark", (tok,)),
        ("set_cookie", f"Set-Cookie: sid={tok}; Path=/; HttpOnly", (tok,)),
        ("docker_config_auth", f'{{"auths": {{"registry.example.com": {{"auth": "{b64}"}}}}}}', (b64,)),
        ("json_basic_auth", f'{{"upstream": {{"Authorization": "Basic {b64}"}}}}', (b64,)),
        ("basic_blob_bare", f"proxy credentials basic {b64} rejected", (b64,)),
        ("aws_pair_colon", f"creds {aws_id}:{aws_secret}", (aws_id[4:], aws_secret)),
        ("aws_pair_tuple", f"Session('{aws_id}', '{aws_secret}')", (aws_id[4:], aws_secret)),
        (
            "aws_pair_env",
            f"AWS_ACCESS_KEY_ID={aws_id} AWS_SECRET_ACCESS_KEY={aws_secret}",
            (aws_id[4:], aws_secret),
        ),
        ("twilio_positional", f"Client('{hexsid}', '{hextok}')", (hextok,)),
        ("twilio_pair", f"twilio {hexsid}:{hextok}", (hextok,)),
        ("positional_login", f"login('{user}', '{pw}')", (pw,)),
        ("positional_basic_auth", f"HTTPBasicAuth('{user}', '{pw}')", (pw,)),
        ("python_tuple_pair", f"('password', '{pw}')", (pw,)),
        ("python_bytes_pair", f"{{'password': b'{pw}'}}", (pw,)),
        (
            "slack_webhook",
            f"POST https://hooks.slack.com/services/T{g.s(8, UPPER_NUM)}/B{g.s(10, UPPER_NUM)}/{tok[:24]}",
            (tok[:24],),
        ),
        (
            "discord_webhook",
            f"https://discord.com/api/webhooks/{g.s(18, string.digits)}/{discord}",
            (discord,),
        ),
        (
            "zapier_webhook",
            f"https://hooks.zapier.com/hooks/catch/{g.s(7, string.digits)}/{zapier}/",
            (zapier,),
        ),
        (
            "teams_webhook",
            f"https://acme.webhook.office.com/webhookb2/{g.s(8, HEX)}-{g.s(4, HEX)}@{g.s(8, HEX)}/IncomingWebhook/{tok}/{g.s(8, HEX)}",
            (tok,),
        ),
        ("generic_webhook_path", f"https://ci.example.com/hooks/{tok}", (tok,)),
        (
            "telegram_bot",
            f"https://api.telegram.org/bot{g.s(10, string.digits)}:{telegram}/sendMessage",
            (telegram,),
        ),
        (
            "query_signature",
            f"https://b.s3.amazonaws.com/k?X-Amz-Credential={aws_id}%2F2025&X-Amz-Signature={hextok}",
            (hextok, aws_id[4:]),
        ),
        ("query_key", f"https://maps.example.com/api?key={tok}&q=x", (tok,)),
        ("jwt_header", f"id_token={jwt_body}.{g.s(20, URLSAFE)}.{g.s(43, URLSAFE)}", (jwt_body[3:],)),
        ("url_token_query", f"GET /api/items?token=sk_live_{tok}&page=2", (tok,)),
    ]


def _structural_cases(g: _Gen, rounds: int) -> list[Case]:
    return [Case(kind, text, secrets) for _ in range(rounds) for kind, text, secrets in _structural(g)]


# --------------------------------------------------------------------------- prose, many languages

_PHRASES: dict[str, tuple[str, ...]] = {
    "prose_en": ("my password is {v}", "the new password: {v}", "Password = {v} (do not share)"),
    "prose_de": ("Das Passwort ist {v}", "Passwort: {v}", "Ihr neues Kennwort lautet {v}"),
    "prose_fr": ("le mot de passe est {v}", "Mot de passe : {v}", "votre mot de passe est « {v} »"),
    "prose_es": ("la contraseña es {v}", "Contraseña: {v}", "su nueva contraseña es {v}"),
    "prose_pt": ("a senha é {v}", "Senha: {v}"),
    "prose_it": ("la password è {v}", "Password: {v}"),
    "prose_nl": ("het wachtwoord is {v}", "Wachtwoord: {v}"),
    "prose_pl": ("hasło: {v}", "Twoje hasło: {v}"),
    "prose_ru": ("пароль: {v}", "Ваш пароль: {v}"),
    "prose_zh": ("密码：{v}", "您的密码是{v}"),
    "prose_ja": ("パスワード: {v}", "パスワードは {v} です"),
}


def _prose(g: _Gen, per_language: int) -> list[Case]:
    cases = []
    for kind, forms in _PHRASES.items():
        for _ in range(per_language):
            v = g.password()
            cases.append(Case(kind, g.pick(forms).format(v=v), (v,)))
    return cases


# --------------------------------------------------------------------------- multi-line keys

_PEM_LABELS = (
    "RSA PRIVATE KEY",
    "PRIVATE KEY",
    "EC PRIVATE KEY",
    "OPENSSH PRIVATE KEY",
    "ENCRYPTED PRIVATE KEY",
    "DSA PRIVATE KEY",
)


def _keys(g: _Gen, count: int) -> list[Case]:
    cases = []
    for i in range(count):
        label = _PEM_LABELS[i % len(_PEM_LABELS)]
        lines = [g.s(64, B64) for _ in range(g.r.randint(3, 8))]
        body = "\n".join(lines)
        pem = f"-----BEGIN {label}-----\n{body}\n-----END {label}-----"
        if i % 3 == 0:
            cases.append(Case("pem_block", f"loaded key from vault:\n{pem}\nok", tuple(lines)))
        elif i % 3 == 1:
            escaped = pem.replace("\n", "\\n")
            doc = (
                '{\n  "type": "service_account",\n  "project_id": "acme-prod",\n'
                f'  "private_key_id": "{g.s(40, HEX)}",\n  "private_key": "{escaped}\\n",\n'
                '  "client_email": "svc@acme-prod.iam.gserviceaccount.com"\n}'
            )
            cases.append(Case("json_service_account_key", doc, tuple(lines)))
        else:
            cut = pem[: len(pem) // 2]  # a truncated record: the block never ends
            cases.append(Case("pem_truncated", f"key={cut}", tuple(ln for ln in lines if ln in cut)))
    return cases


# --------------------------------------------------------------------------- the issue's list

# Every miss the issue lists, as a user wrote it (secrets assembled from parts).
_SK = "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"
ISSUE_CASES: tuple[Case, ...] = (
    Case(
        "issue_url_query",
        f"http.url=https://shop.example.com/pay?token={_SK}&amount=5",
        ("4eC39HqLyjWDarjtT1zdp7dc",),
    ),
    Case("issue_url_query", f"url.query=token={_SK}", ("4eC39HqLyjWDarjtT1zdp7dc",)),
    Case(
        "issue_console",
        "ConnectionError: search backend refused api_key=sk-live-0000SECRET0000 at 10.0.0.7",
        ("0000SECRET0000",),
    ),
    Case("issue_emit", "api_key=sk-live-" + "0000SECRET0000", ("0000SECRET0000",)),
    Case(
        "issue_key_secret_pair",
        "aws AKIAIOSFODNN7EXAMPLE " + "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",),
    ),
    Case(
        "issue_positional",
        "Client('AC" + "f" * 32 + "', '9f86d081884c7d659a2feaa0c55ad015')",
        ("9f86d081884c7d659a2feaa0c55ad015",),
    ),
    Case(
        "issue_sendgrid",
        "SG." + "ngeVfQFYQlKU0ufo8x5d1A" + "." + "TwL2iGABf9DHoTf-09kqeF8tAmbihYzrnopKc-1s5cr",
        ("ngeVfQFYQlKU0ufo8x5d1A", "TwL2iGABf9DHoTf-09kqeF8tAmbihYzrnopKc-1s5cr"),
    ),
    Case(
        "issue_npm",
        "npm_" + "1a2B3c4D5e6F7g8H9i0JkLmNoPqRsTuVwXyZ",
        ("1a2B3c4D5e6F7g8H9i0JkLmNoPqRsTuVwXyZ",),
    ),
    Case("issue_phrase_de", "Das Passwort ist Geheim2024!", ("Geheim2024!",)),
    Case("issue_phrase_fr", "Le mot de passe est Soleil#77", ("Soleil#77",)),
    Case("issue_phrase_es", "La contraseña es Perro!123", ("Perro!123",)),
    Case("issue_curl", "curl -u admin:Tr0ub4dor https://api.example.com", ("Tr0ub4dor",)),
    Case("issue_go_dsn", "root:Hunter2pw@tcp(127.0.0.1:3306)/shop", ("Hunter2pw",)),
    Case("issue_python_dict", "{'user': 'bob', 'password': 'hunter2'}", ("hunter2",)),
    Case("issue_python_tuple", "('password', 'hunter2')", ("hunter2",)),
    Case(
        "issue_go_header_map",
        "map[Authorization:[Bearer abc123def456] X-Api-Key:[k3y-9f8e7d6c]]",
        ("abc123def456", "k3y-9f8e7d6c"),
    ),
    Case(
        "issue_json_basic",
        '{"auth": "' + base64.b64encode(b"bob:hunter2").decode() + '"}',
        (base64.b64encode(b"bob:hunter2").decode(),),
    ),
    Case(
        "issue_webhook_path",
        "https://hooks.slack.com/services/T0000AAAA/B0000BBBB/XXXXXXXXXXXXXXXXXXXXXXXX",
        ("XXXXXXXXXXXXXXXXXXXXXXXX",),
    ),
    Case("issue_auth_line", "AUTH s3cr3tpw", ("s3cr3tpw",)),
)
ISSUE_BENIGN: tuple[str, ...] = (
    "ssh://git@github.com/org/repo.git",
    "PWD=/home/x",
    "/etc/passwd: permission denied",
    "next_page_token=CiAKGjBpNDd2Nmp2Zml2cXRwYjBpOXA3",
    "Authorization: denied",
    "password=***",
    "token: **",
    "api_key=[REDACTED]",
    "password=SecretStr('**********')",
    "Settings(password=SecretStr('**********'), debug=True)",
    "secret=<REDACTED>",
)


# --------------------------------------------------------------------------- benign look-alikes


def _benign_templates(g: _Gen) -> dict[str, list[str]]:
    sha1, sha256, uuid = (
        g.s(40, HEX),
        g.s(64, HEX),
        f"{g.s(8, HEX)}-{g.s(4, HEX)}-4{g.s(3, HEX)}-a{g.s(3, HEX)}-{g.s(12, HEX)}",
    )
    trace, span, n = g.s(32, HEX), g.s(16, HEX), g.r.randint(1, 9999)
    png = "iVBORw0KGgoAAAANSUhEUgAA" + g.s(120, B64)
    user, pod = (
        g.pick(["bob", "alice", "deploy", "ci"]),
        f"api-{g.s(10, HEX)}-{g.s(5, string.ascii_lowercase)}",
    )
    cursor = g.s(40, URLSAFE)
    lang = g.pick(["Passwort vergessen? Link gesendet.", "mot de passe incorrect, réessayez", "la contraseña es incorrecta",
                   "a senha expirou", "пароль неверный", "密码错误，请重试", "パスワードが違います", "das Passwort ist falsch",
                   "le mot de passe est trop court", "hasło wygasło", "het wachtwoord is verlopen"])  # fmt: skip
    return {
        "hash": [
            f"commit {sha1} merged",
            f"sha256:{sha256}",
            f'etag W/"{sha1}"',
            f"checksum md5={g.s(32, HEX)} ok",
        ],
        "uuid": [f"request_id={uuid} status=200", f"user {uuid} logged in", f"/api/v1/orders/{uuid}/items"],
        "otel_ids": [f"trace_id={trace} span_id={span}", f"traceparent: 00-{trace}-{span}-01"],
        "base64_image": [f'<img src="data:image/png;base64,{png}">', f"avatar=data:image/png;base64,{png}"],
        "path": [
            f"/home/{user}/.cache/pip/wheels/{sha1[:2]}/{sha1[2:]}",
            f"/var/lib/docker/overlay2/{sha256}/merged",
            f"C:\\Users\\{user}\\AppData\\Local\\Temp\\tmp{g.s(8)}",
            f"src/auth/token_store.py:{n}",
            "/etc/ssl/private/server.key: no such file",
            "/usr/share/git-core/templates/hooks/pre-commit.sample",
        ],
        "masked": [
            "password=***",
            f"password={'*' * g.r.randint(2, 12)}",
            "token: [REDACTED]",
            "api_key=<REDACTED>",
            "secret: [FILTERED]",
            "{'password': '********'}",
            '{"token": "***"}',
            "password=SecretStr('**********')",
            f"card=****{g.s(4, string.digits)}",
            "client_secret: ${CLIENT_SECRET}",
            "DB_PASSWORD=$DB_PASSWORD",
            "api_key: <your-api-key>",
            "token={{ secrets.GITHUB_TOKEN }}",
            "Authorization: Bearer <REDACTED>",
            "AWS_SECRET_ACCESS_KEY=<REDACTED>",
            "password: null",
            '{"password": ""}',
        ],
        "pagination": [
            f"next_page_token={cursor}",
            f'{{"nextPageToken": "{cursor}"}}',
            f"pageToken={cursor}&pageSize=50",
            f"continuation_token: {cursor}",
            f"sync_token={cursor}",
        ],
        "prose": [
            "password reset email sent to user " + str(n),
            "token bucket refilled (45 tokens)",
            lang,
            "rotate secrets every 90 days",
            "invalid API key format",
            "the secret to good tests is patience",
            "Bearer of bad news: build failed",
            "authorization failed for user " + user,
            "password is required",
            "token expired, refreshing",
            "KeyError: 'password'",
            "login() missing 1 required positional argument: 'password'",
            "basic auth disabled for this route",
            "AUTH LOGIN",
            "Set-Cookie header was missing",
        ],
        "counts": [
            f"tokens_saved={n} max_tokens={n * 2}",
            f'{{"prompt_tokens": {n}, "completion_tokens": {n + 7}}}',
            f"token_count={n}",
            f"password_min_length=12 password.max_age_days={n}",
            f"cache_key=user:{n} sort_key=name",
        ],
        "git_ssh": [
            "ssh://git@github.com/org/repo.git",
            f"git@github.com:{user}/repo.git",
            "ssh git@bastion.internal -p 2222",
        ],
        "shell": [
            f"ssh -p 2222 {user}@bastion",
            "tar -xzf pkg.tgz -C /opt",
            f"PWD=/home/{user}/src",
            f"OLDPWD=/tmp HOME=/home/{user}",
            "/etc/passwd: permission denied",
            "cat: /etc/shadow: Permission denied",
            f"USER={user} SHELL=/bin/bash",
        ],
        "http": [
            "Authorization: denied",
            f"GET /api/v1/messages?page=2&limit=50 200 {n}ms",
            "POST /login 302 -> /home",
            f"https://api.example.com/v1/users?sort=name&page={n}",
            "Cookie policy accepted",
            f"Host: api.example.com:{n}",
        ],
        "infra": [
            f"pod {pod} restarted",
            f"image registry.example.com/app@sha256:{sha256}",
            f"nginx:1.25@sha256:{sha256}",
            f"mail {user}@example.com about ticket {n}",
            f"10.0.{n % 255}.7:{n} connection reset",
            f"model=claude-3-5-sonnet-{n}",
        ],
        "sql": [
            f"SELECT id, name FROM users WHERE id = {n}",
            "UPDATE users SET password_changed_at = now() WHERE id = $1",
            "ALTER TABLE users ADD COLUMN password_hash text",
        ],
        "code_words": [
            f"def rotate_secret(secret_id: str) -> None:  # line {n}",
            f"api_key_id={uuid}",
            "pk_live_" + g.s(24),
            f"task-{g.s(24, string.ascii_lowercase + string.digits)}",
            "class TokenBucket:",
        ],
    }


def _benign(g: _Gen, rounds: int) -> list[Case]:
    out: list[Case] = [Case("issue_benign", text) for text in ISSUE_BENIGN]
    for _ in range(rounds):
        for kind, texts in _benign_templates(g).items():
            out.append(Case(f"benign_{kind}", g.pick(texts)))
    return out


# --------------------------------------------------------------------------- the corpus and its score


def build(seed: int = 14) -> tuple[list[Case], list[Case]]:
    """``(true cases, benign cases)``, the same for the same seed."""
    g = _Gen(seed)
    true = [
        *ISSUE_CASES,
        *_tokens(g, 7),
        *_key_values(g, 30),
        *_structural_cases(g, 4),
        *_prose(g, 6),
        *_keys(g, 30),
    ]
    return true, _benign(g, 40)


def leaks(case: Case, out: str, window: int = 8) -> list[str]:
    """Fragments of the case's secrets still in ``out``: the whole, or any ``window``-long piece."""
    found: list[str] = []
    for secret in case.secrets:
        if len(secret) <= window:
            pieces = {secret}
        else:
            pieces = {secret[i : i + window] for i in range(len(secret) - window + 1)}
        found.extend(p for p in sorted(pieces) if p in out)
    return found


# Where the corpus test leaves its summary for the terminal report (tests/conftest.py).
SCORE_KEY = pytest.StashKey[str]()


@dataclass(frozen=True, slots=True)
class Score:
    true_total: int
    true_caught: int
    benign_total: int
    benign_changed: int
    kinds: int
    misses: tuple[tuple[Case, str], ...]
    false_positives: tuple[tuple[Case, str], ...]

    @property
    def recall(self) -> float:
        return self.true_caught / self.true_total

    @property
    def benign_changed_rate(self) -> float:
        return self.benign_changed / self.benign_total

    def summary(self) -> str:
        return (
            f"redaction corpus: recall {self.recall:.2%} ({self.true_caught}/{self.true_total} true cases, "
            f"{self.kinds} kinds), benign changed {self.benign_changed_rate:.2%} "
            f"({self.benign_changed}/{self.benign_total})"
        )


def score(redact: Callable[[str], str], seed: int = 14) -> Score:
    true, benign = build(seed)
    misses = []
    for case in true:
        out = redact(case.text)
        if leaks(case, out) or out == case.text:
            misses.append((case, out))
    changed = []
    for case in benign:
        out = redact(case.text)
        if out != case.text:
            changed.append((case, out))
    return Score(
        len(true),
        len(true) - len(misses),
        len(benign),
        len(changed),
        len({c.kind for c in true}),
        tuple(misses),
        tuple(changed),
    )


# --------------------------------------------------------------------------- hostile inputs


def hostile_inputs(size: int = 100_000) -> dict[str, str]:
    """Inputs shaped to make a regex backtrack: long runs with no terminator, many openers
    that never close, dense keys without values. Shared by the test (a generous bound) and
    benchmarks/bench_redact.py (the tight one)."""
    return {
        "no_separator": "a" * size,
        "words": "lorem ipsum " * (size // 12),
        "keys_without_values": "password=" * (size // 9),
        "keys_and_colons": "token: " * (size // 7),
        "unterminated_escapes": '"password": "' + '\\"' * (size // 2),
        "schemes": "://" * (size // 3),
        "userinfo_openers": "://a:" * (size // 5),
        "ats": "@" * size,
        "dsn_like": "a:b@h:1" * (size // 7),
        "underscores": "_" * size,
        "dashes": "ab-" * (size // 3),
        "dots": "." * size,
        "pem_never_ends": "-----BEGIN RSA PRIVATE KEY-----" + "A" * size,
        "pem_openers": "-----BEGIN PRIVATE KEY-----\n" * (size // 28),
        "authorization_headers": "Authorization: " * (size // 15),
        "call_openers": "client(" + "a," * (size // 2),
        "aws_prefixes": "AKIA" * (size // 4),
        "hook_paths": "/hooks/" * (size // 7),
        "jwt_openers": "eyJaaaaa." * (size // 9),
        "base64": "QUJD" * (size // 4),
        "password_flags": "mysql " + "-p x " * (size // 5),
        "cyrillic": "пароль " * (size // 7),
        "cjk": "密码" * (size // 2),
        "quotes": "'\"`" * (size // 3),
        "backslashes": "\\" * size,
        "tuple_openers": "('password', " * (size // 13),
        "lowercase_changes_length": "İ" * (size // 2) + "password=x",
    }


if __name__ == "__main__":
    from membrane_otel.logs._redact import redact_secrets

    result = score(redact_secrets)
    print(result.summary())
    for case, out in result.misses:
        print("MISS", case.kind, repr(case.text[:160]), "->", repr(out[:160]))
    for case, out in result.false_positives:
        print("CHANGED", case.kind, repr(case.text[:160]), "->", repr(out[:160]))
