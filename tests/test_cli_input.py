"""Bad input to the ``acdg`` command as users type it (flags, environment variables, TOML
files, apps that do not load, addresses that cannot be had), each in a process of its
own: exit status 2 and one line on stderr naming the problem and the fix, no traceback
and no usage block. ``--help`` stays argparse's whole help."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# {tmp} is the test's directory (the process runs there); {busy} a port something listens on.
CASES: list[tuple[str, list[str], dict[str, str], str]] = [
    # flags
    ("port-not-a-number", ["serve", "--port", "http"], {},
     "argument --port: 'http' is not a port number: use 1-65535"),
    ("port-too-big", ["serve", "--port", "99999"], {}, "'99999' is not a port number"),
    ("port-negative", ["serve", "--port", "-1"], {}, "'-1' is not a port number"),
    ("ops-port-bad", ["serve", "--ops-port", "9o9o"], {}, "argument --ops-port: '9o9o'"),
    ("ops-port-same", ["serve", "--port", "9000", "--ops-port", "9000"], {},
     "ops_port 9000 is the bot's port too: give /ready and /metrics a port of their own"),
    ("misspelt-flag", ["serve", "--prot", "8000"], {},
     "unknown flag --prot (did you mean --port?)"),
    ("unknown-flag", ["serve", "--zzz"], {}, "unknown flag --zzz; acdg serve --help lists them"),
    ("second-app", ["serve", "a:app", "b:app"], {}, "unexpected argument 'b:app'"),
    ("max-calls-word", ["serve", "--max-calls", "lots"], {},
     "argument --max-calls: 'lots': give a whole number, 1 or more"),
    ("max-calls-zero", ["serve", "--max-calls", "0"], {}, "'0': give a whole number, 1 or more"),
    ("workers-zero", ["serve", "--workers", "0"], {}, "argument --workers: '0'"),
    ("drain-timeout-negative", ["serve", "--drain-timeout", "-5"], {},
     "argument --drain-timeout: '-5': give seconds, 0 or more"),
    ("drain-timeout-word", ["serve", "--drain-timeout", "soon"], {}, "'soon': give seconds"),
    ("drain-mode", ["serve", "--drain", "later"], {}, "invalid choice: 'later'"),
    ("lead-ms", ["serve", "--lead-ms", "1.5"], {},
     "argument --lead-ms: '1.5': give milliseconds as a whole number, 0 or more"),
    ("chunk-ms", ["serve", "--chunk-ms", "0"], {}, "argument --chunk-ms: '0'"),
    ("caller-frame-ms", ["serve", "--caller-frame-ms", "-20"], {}, "argument --caller-frame-ms"),
    ("log-level", ["serve", "--log-level", "loud"], {}, "invalid choice: 'loud'"),
    ("path", ["serve", "--path", "/audio codes"], {},
     "invalid bridge path '/audio codes': use a URL path such as /audiocodes"),
    ("keyfile-missing", ["serve", "--ssl-certfile", "cert.pem", "--ssl-keyfile",
                         "nokey.pem"], {}, "argument --ssl-keyfile: 'nokey.pem': no such file"),
    ("cert-without-key", ["serve", "--ssl-certfile", "cert.pem"], {}, "TLS needs both files"),
    ("not-pem", ["serve", "--ssl-certfile", "cert.pem", "--ssl-keyfile", "cert.pem"], {},
     "they must be PEM files"),
    ("records-dir", ["serve", "--records", "no/such/dir/calls.jsonl"], {},
     "records file no/such/dir/calls.jsonl: No such file or directory"),
    ("workers-alone", ["serve", "--workers", "2"], {}, "--workers 2 needs a shared store"),
    ("host", ["serve", "--host", "nohost.invalid"], {},
     "'nohost.invalid' is not an address"),
    ("port-taken", ["serve", "--host", "127.0.0.1", "--port", "{busy}"], {},
     "another process listens there: stop it or choose another port"),
    # APP
    ("app-no-module", ["serve", "nosuchmodule:app"], {},
     'cannot load the app nosuchmodule:app: Could not import module "nosuchmodule"'),
    ("app-no-attr", ["serve", "json:nosuch"], {}, 'Attribute "nosuch" not found in module'),
    ("app-no-colon", ["serve", "myapp"], {}, "use module:attribute, e.g. myapp:app"),
    ("app-no-bridge", ["serve", "json:dumps"], {}, "no BridgeApp found in json:dumps"),
    ("app-raises", ["serve", "broken:app"], {},
     "importing it raised NameError: name 'undefined_name' is not defined "
     "({tmp}/broken.py line 3)"),
    ("app-missing-dependency", ["serve", "needsdep:app"], {},
     "ModuleNotFoundError: No module named 'nosuchdependency'"),
    ("factory-raises", ["serve", "json:dumps", "--factory"], {}, "--factory: json:dumps() raised"),
    ("app-dir", ["serve", "--app-dir", "nowhere", "myapp:app"], {},
     "app_dir 'nowhere': no such directory"),
    # TOML
    ("toml-unknown-key", ["serve", "--config", "typo.toml"], {},
     "typo.toml: unknown key 'server.prot' (did you mean \"port\"?)"),
    ("toml-type", ["serve", "--config", "type.toml"], {},
     "type.toml [server] port: Expected `int`, got `str`"),
    ("toml-range", ["serve", "--config", "range.toml"], {},
     "range.toml [limits]: Limits(max_calls=-3): max_calls must be 1 or more"),
    ("toml-agent-key", ["serve", "--config", "agent.toml"], {},
     "unknown key 'agent.think.promt' (did you mean \"prompt\"?)"),
    ("toml-syntax", ["serve", "--config", "syntax.toml"], {}, "cannot read syntax.toml"),
    ("toml-missing", ["serve", "--config", "none.toml"], {}, "cannot read none.toml"),
    # environment
    ("env-port-word", ["serve"], {"ACDG_PORT": "abc"},
     "ACDG_PORT: 'abc' is not a port number: use 1-65535"),
    ("env-port-range", ["serve"], {"ACDG_PORT": "70000"}, "ACDG_PORT: '70000'"),
    ("env-host", ["serve"], {"ACDG_HOST": "nohost.invalid"}, "'nohost.invalid' is not an address"),
    ("env-path", ["serve"], {"ACDG_PATH": "a b"}, "ACDG_PATH: invalid bridge path 'a b'"),
    ("env-agent-url", ["serve"], {"DEEPGRAM_URL": "http://agent.example.com"},
     "deepgram_url must be a ws:// or wss:// URL"),
    ("env-redis-url", ["serve"], {"ACDG_REDIS_URL": "localhost:6379"},
     "ACDG_REDIS_URL must be a Redis URL such as redis://localhost:6379/0"),
    ("env-no-key", ["serve"], {"DEEPGRAM_API_KEY": ""}, "set DEEPGRAM_API_KEY"),
    ("env-proxy", ["serve"], {"HTTPS_PROXY": "socks5://proxy.example.com:1080"},
     "tunnels through http:// proxies; use WebsocketsConnector for https:// and SOCKS "
     "proxies: check HTTPS_PROXY"),
    # the check and the other commands take the same values
    ("check-port", ["serve", "--check", "--port", "99999"], {}, "'99999' is not a port number"),
    ("check-app", ["serve", "--check", "json:dumps"], {}, "no BridgeApp found in json:dumps"),
    ("doctor-port", ["doctor", "--port", "x"], {}, "acdg doctor: error: argument --port: 'x'"),
    ("demo-port", ["demo", "--port", "65535"], {}, "the stand-in agent takes the next port"),
    ("demo-port-taken", ["demo", "--port", "{busy}"], {}, "another process listens there"),
    ("no-command", [], {}, "acdg: error: the following arguments are required: COMMAND"),
    ("unknown-command", ["srve"], {}, "invalid choice: 'srve'"),
]

FILES = {
    "cert.pem": "not a certificate\n",
    "broken.py": "x = 1\ndef f():\n    return undefined_name\napp = f()\n",
    "needsdep.py": "import nosuchdependency\napp = None\n",
    "typo.toml": "[server]\nprot = 8000\n",
    "type.toml": '[server]\nport = "8000"\n',
    "range.toml": "[limits]\nmax_calls = -3\n",
    "agent.toml": '[agent.think]\npromt = "You are terse."\n',
    "syntax.toml": "[server\nport = 8000\n",
}


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def run_acdg(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("ACDG_", "DEEPGRAM_")) and k.lower() not in (
                "https_proxy", "http_proxy", "all_proxy")}
    return subprocess.run([sys.executable, "-m", "acdg_asgi.cli", *argv], cwd=cwd,
                          env={**base, "DEEPGRAM_API_KEY": "k", **env}, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize(("argv", "env", "says"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line(argv: list[str], env: dict[str, str], says: str,
                                         tmp_path: Path, busy_port: int) -> None:
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    fill = {"tmp": str(tmp_path), "busy": str(busy_port)}
    done = run_acdg([a.format(**fill) for a in argv], env, tmp_path)
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr and "usage:" not in done.stderr
    assert lines[0].startswith(("acdg: error: ", f"acdg {argv[0] if argv else ''}: error: "))
    assert says.format(**fill) in lines[0], lines[0]
    assert done.stdout == ""


def test_help_is_the_whole_help(tmp_path: Path) -> None:
    done = run_acdg(["serve", "--help"], {}, tmp_path)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.startswith("usage: acdg serve ")
    for flag in ("--port", "--ops-port", "--check", "--max-calls", "--drain-timeout"):
        assert flag in done.stdout, flag
