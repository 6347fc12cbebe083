"""From the README to production: the bridge at its path in every framework and in
``acdg serve --path`` (bare and slashed URLs, WebSocket and GET), ``acdg serve APP`` with
the app's handlers, and SIGTERM draining with a polite hang-up under ``acdg serve``,
plain uvicorn, gunicorn's uvicorn workers and hypercorn: real processes, real signals."""

from __future__ import annotations

import re
import signal
import ssl
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI
from litestar import Litestar
from rig import standin
from servers import ROOT, Process, free_port, process, wait_for_http
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from vaic_raw import vaic

from acdg_asgi import AgentSettings, BridgeApp, Connection
from acdg_asgi.asgi.admission import DIRECT_HINT, TAKEN_OVER
from acdg_asgi.cli import main
from acdg_asgi.cli.serve import find_bridges
from acdg_asgi.cli.settings import ServeSettings, load_settings, sample_config
from acdg_asgi.testing.agent import AgentScript, Turn
from acdg_asgi.testing.report import CallReport
from acdg_asgi.testing.script import CallScript, Utterance
from acdg_asgi.testing.server import serve
from acdg_asgi.testing.vaic import run_call

pytestmark = pytest.mark.anyio

PROBE = {"type": "ac-bot-api", "success": True}
SCRIPT = AgentScript(
    turns=(Turn("Your order", heard="where is my order", function="lookup_order",
                arguments='{"order_id": "A1"}'),
           *(Turn(f"Answer {i}.", heard="more") for i in range(12))),
    ms_per_word=40,
)
PLAIN = AgentScript(turns=tuple(Turn(f"Answer {i}.", heard="more") for i in range(12)),
                    ms_per_word=40)
# A caller that keeps the call going well past any drain deadline used here.
LONG_CALL = CallScript(
    utterances=(Utterance(speech_ms=0, pause_ms=900),
                *(Utterance(speech_ms=300, pause_ms=700) for _ in range(20))),
    wait_for_hangup=True,
    max_duration_ms=25_000,
)


# --- bridge.routes() / bridge.litestar_handler() --------------------------------------------


def framework_app(framework: str, bridge: BridgeApp) -> Any:
    if framework == "starlette":
        return Starlette(routes=[Route("/", lambda r: None), *bridge.routes("/audiocodes")],
                         lifespan=bridge.lifespan)
    if framework == "fastapi":
        app = FastAPI(lifespan=bridge.lifespan)
        app.router.routes.extend(bridge.routes("/audiocodes"))
        return app
    return Litestar(route_handlers=[bridge.litestar_handler("/audiocodes")],
                    lifespan=[bridge.lifespan])


@pytest.mark.parametrize("framework", ["starlette", "fastapi", "litestar"])
async def test_bare_and_slashed_urls_in_each_framework(framework: str) -> None:
    paths: list[str] = []

    async def auth(conn: Connection) -> bool:
        paths.append(conn.path)
        return True

    async with standin(SCRIPT) as agent:
        bridge = BridgeApp(agent=AgentSettings(greeting="Hi"), deepgram_url=agent.url,
                           auth=auth, metrics=True, tracing=False)
        app = framework_app(framework, bridge)
        assert find_bridges(app) == [bridge]
        async with serve(app) as host, httpx.AsyncClient(follow_redirects=False) as http:
            for path in ("/audiocodes", "/audiocodes/", "/audiocodes/acme"):
                async with vaic(host, path) as caller:
                    accepted = await caller.initiate()
                    await caller.end()
                    await caller.wait_closed()
                assert accepted["type"] == "session.accepted", path
            for path in ("/audiocodes", "/audiocodes/"):
                probe = await http.get(f"http://{host}{path}")
                assert (probe.status_code, probe.json()) == (200, PROBE), path
            ready = await http.get(f"http://{host}/audiocodes/ready")
            metrics = await http.get(f"http://{host}/audiocodes/metrics")
            elsewhere = await http.get(f"http://{host}/audiocodesx")
    assert paths == ["/", "/", "/acme"]  # Connection.path: the same for both spellings
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert metrics.status_code == 200 and "acdg_calls_started_total 3.0" in metrics.text
    assert elsewhere.status_code == 404


def test_routes_refuse_what_is_not_a_path() -> None:
    bridge = BridgeApp(deepgram_url="ws://127.0.0.1:9/", tracing=False)
    assert bridge.routes("audiocodes/")[0].path == "/audiocodes"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="invalid bridge path"):
        bridge.routes("/audio codes")


def test_find_bridges_through_mounts_and_middleware() -> None:
    from starlette.middleware import Middleware
    from starlette.middleware.gzip import GZipMiddleware

    a = BridgeApp(deepgram_url="ws://127.0.0.1:9/", tracing=False)
    b = BridgeApp(deepgram_url="ws://127.0.0.1:9/", tracing=False)
    inner = Starlette(routes=b.routes("/b"))
    app = Starlette(routes=[*a.routes("/a"), Mount("/inner", inner)],
                    middleware=[Middleware(GZipMiddleware)])
    assert find_bridges(app) == [a, b]
    assert find_bridges(a) == [a]
    assert find_bridges(Starlette()) == []


# --- settings and the command line ------------------------------------------------------------


def test_print_config_is_a_complete_acdg_toml(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--print-config"]) == 0
    text = capsys.readouterr().out
    assert text == sample_config()
    file = tmp_path / "acdg.toml"
    file.write_text(text)
    assert load_settings(file, {}) == ServeSettings()
    defaults = ServeSettings()
    for section in ("server", "bridge", "playout", "limits", "reconnect"):
        assert f"[{section}]" in text
        for key in getattr(defaults, section).__struct_fields__:
            assert f"\n{key} = " in text or f"\n# {key} = " in text, (section, key)


def test_every_serve_flag_has_its_toml_key(tmp_path: Path) -> None:
    file = tmp_path / "acdg.toml"
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    file.write_text(textwrap.dedent(f"""\
        [server]
        app = "myapp:app"
        factory = true
        app_dir = "src"
        host = "0.0.0.0"
        port = 9000
        path = "audiocodes/"
        ssl_certfile = "{cert}"
        ssl_keyfile = "{cert}"
        proxy_headers = false
        forwarded_allow_ips = "*"
        drain = "migrate"
        drain_timeout_s = 12.5
        workers = 2
        log_format = "json"
        records = "calls.jsonl"
        """))
    server = load_settings(file, {}).server
    assert (server.app, server.factory, server.app_dir, server.bind_host, server.port) == (
        "myapp:app", True, "src", "0.0.0.0", 9000)
    assert server.path == "/audiocodes"
    assert (server.ssl_certfile, server.proxy_headers, server.forwarded_allow_ips) == (
        str(cert), False, "*")
    assert (server.drain, server.drain_timeout_s, server.workers) == ("migrate", 12.5, 2)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from acdg_asgi import __version__

    for argv in (["--version"], ["serve", "--version"]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0
        assert capsys.readouterr().out.strip() == f"acdg-asgi {__version__}"


# --- acdg serve, uvicorn, gunicorn, hypercorn as processes -----------------------------------


def bridge_module(tmp_path: Path, agent_url: str, *, drain_timeout_s: float = 1.5) -> Path:
    """A user's module: a Starlette app with the bridge routed as the README says, and no
    logging configured."""
    (tmp_path / "voiceapp.py").write_text(textwrap.dedent(f"""\
        from starlette.applications import Starlette
        from acdg_asgi import AgentSettings, BridgeApp

        bridge = BridgeApp(agent=AgentSettings(greeting="Hello"), deepgram_url={agent_url!r},
                           drain_timeout_s={drain_timeout_s})
        app = Starlette(routes=bridge.routes("/audiocodes"), lifespan=bridge.lifespan)
        """))
    return tmp_path


async def call_through_sigterm(proc: Process, url: str, ready: str,
                               sig: signal.Signals = signal.SIGTERM) -> tuple[CallReport, int]:
    """A long call; once it is up, ``sig`` to the server. The report and /ready meanwhile."""
    reports: list[CallReport] = []
    # A connection per request: with --workers, each may reach another worker.
    fresh = httpx.Limits(max_keepalive_connections=0)
    async with anyio.create_task_group() as tg, httpx.AsyncClient(limits=fresh) as http:

        async def call() -> None:
            reports.append(await run_call(url, LONG_CALL))

        tg.start_soon(call)
        with anyio.fail_after(15):
            while (await http.get(ready)).json()["calls"] < 1:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        await anyio.sleep(0.8)
        proc.proc.send_signal(sig)
        status = 0
        with anyio.fail_after(10):
            while status != 503:
                try:
                    status = (await http.get(ready)).status_code
                except httpx.TransportError:
                    break  # a server that stops listening at once (hypercorn -w 0)
                await anyio.sleep(0.05)
    return reports[0], status


def assert_polite_hangup(report: CallReport) -> None:
    assert report.hangup_reason == "service shutting down", report.ended_by
    assert report.ended_by == "bot-hangup" and not report.violations, report.violations
    assert len(report.play_streams) >= 2  # the call went on after the signal


async def test_acdg_serve_path_takes_bare_and_slashed_urls(tmp_path: Path) -> None:
    async with standin(SCRIPT) as agent:
        port = free_port()
        argv = ["-m", "acdg_asgi.cli", "serve", "--path", "audiocodes", "--host", "127.0.0.1",
                "--port", str(port)]
        with process(argv, tmp_path / "serve.log", env={"DEEPGRAM_URL": agent.url}) as proc:
            base = f"127.0.0.1:{port}"
            await wait_for_http(f"http://{base}/audiocodes/ready", proc)
            for path in ("/audiocodes", "/audiocodes/"):
                report = await run_call(f"ws://{base}{path}",
                                        CallScript(utterances=(Utterance(),)))
                # conformant: this bridge has no handler for the script's function call,
                # so the agent never answers the caller (report.failures says so)
                assert report.conformant and report.media_format == "raw/lpcm16", path
            async with httpx.AsyncClient(follow_redirects=False) as http:
                probes = [await http.get(f"http://{base}{p}")
                          for p in ("/audiocodes", "/audiocodes/")]
                metrics = await http.get(f"http://{base}/audiocodes/metrics")
        log = proc.log
    assert [(p.status_code, p.json()) for p in probes] == [(200, PROBE)] * 2
    assert "process_resident_memory_bytes" in metrics.text
    assert "_created" not in metrics.text
    assert f"ws://127.0.0.1:{port}/audiocodes " in log


async def test_acdg_serve_ops_port_serves_ready_and_metrics_alone(tmp_path: Path) -> None:
    """``--ops-port``: ``/ready`` and ``/metrics`` there and not on the bot URL; a call on the
    bot's port shows in both; readiness turns 503 there when SIGTERM starts the drain."""
    async with standin(PLAIN) as agent:
        port, ops = free_port(), free_port()
        argv = ["-m", "acdg_asgi.cli", "serve", "--path", "/audiocodes", "--host", "127.0.0.1",
                "--port", str(port), "--ops-port", str(ops), "--drain-timeout", "1.5"]
        with process(argv, tmp_path / "serve.log", env={"DEEPGRAM_URL": agent.url}) as proc:
            base = f"127.0.0.1:{port}"
            await wait_for_http(f"http://127.0.0.1:{ops}/ready", proc)
            first = await run_call(f"ws://{base}/audiocodes", CallScript(utterances=(Utterance(),)))
            async with httpx.AsyncClient() as http:
                public = [(await http.get(f"http://{base}/audiocodes{p}")).status_code
                          for p in ("", "/ready", "/metrics")]
                metrics = await http.get(f"http://127.0.0.1:{ops}/metrics")
                elsewhere = await http.get(f"http://127.0.0.1:{ops}/audiocodes")
            upgrade = await run_call(f"ws://127.0.0.1:{ops}/audiocodes", CallScript())
            report, ready = await call_through_sigterm(
                proc, f"ws://{base}/audiocodes", f"http://127.0.0.1:{ops}/ready")
            status = proc.wait()
        log = proc.log
    assert first.ok, first.violations
    assert public == [200, 404, 404]
    assert metrics.status_code == 200 and "acdg_calls_started_total 1.0" in metrics.text
    assert elsewhere.status_code == 404
    assert upgrade.connect_error is not None and "403" in upgrade.connect_error
    assert_polite_hangup(report)
    assert ready == 503 and status == 0
    assert f"on the ops port only: http://127.0.0.1:{ops}/ready" in log
    assert "ERROR" not in log and "Traceback" not in log


async def test_acdg_serve_app_with_an_ops_port(tmp_path: Path) -> None:
    """With APP the app's bridge moves its /ready and /metrics to the ops port too."""
    async with standin(SCRIPT) as agent:
        port, ops = free_port(), free_port()
        argv = ["-m", "acdg_asgi.cli", "serve", "examples.fastapi_app:build_app", "--factory",
                "--host", "127.0.0.1", "--port", str(port), "--ops-port", str(ops)]
        env = {"DEEPGRAM_URL": agent.url, "ACDG_TOKEN": ""}
        with process(argv, tmp_path / "serve.log", env=env) as proc:
            await wait_for_http(f"http://127.0.0.1:{port}/health", proc)
            async with httpx.AsyncClient() as http:
                public = (await http.get(f"http://127.0.0.1:{port}/audiocodes/ready")).status_code
                health = (await http.get(f"http://127.0.0.1:{port}/health")).status_code
                ready = await http.get(f"http://127.0.0.1:{ops}/ready")
    assert (public, health) == (404, 200)
    assert ready.status_code == 200 and ready.json()["ready"] is True


async def test_acdg_serve_app_with_handlers_drains_on_sigterm(tmp_path: Path) -> None:
    """The FastAPI example as `acdg serve examples.fastapi_app:build_app --factory`: its
    function handler answers, and SIGTERM hangs the call up politely at the deadline."""
    async with standin(SCRIPT) as agent:
        port = free_port()
        argv = ["-m", "acdg_asgi.cli", "serve", "examples.fastapi_app:build_app", "--factory",
                "--host", "127.0.0.1", "--port", str(port), "--drain-timeout", "1.5",
                "--records", str(tmp_path / "calls.jsonl")]
        env = {"DEEPGRAM_URL": agent.url, "ACDG_TOKEN": ""}
        with process(argv, tmp_path / "serve.log", env=env) as proc:
            base = f"127.0.0.1:{port}"
            await wait_for_http(f"http://{base}/health", proc)
            report, ready = await call_through_sigterm(
                proc, f"ws://{base}/audiocodes", f"http://{base}/audiocodes/ready")
            status = proc.wait()
        log = proc.log
    assert_polite_hangup(report)
    assert ready == 503
    assert report.play_streams[1].alt_text == 'Your order ({"status":"shipped"})'
    assert status == 0
    assert "loop uvloop, HTTP httptools, WebSocket DirectWebSocketProtocol" in log
    assert "SIGTERM received: draining" in log and "drained: no calls left" in log
    assert '"end_reason":"shutdown"' in (tmp_path / "calls.jsonl").read_text()


async def test_examples_run_through_acdg_serve(tmp_path: Path) -> None:
    for name in ("starlette_app", "fastapi_app", "litestar_app", "multi_tenant", "oauth_jwt"):
        text = (ROOT / "examples" / f"{name}.py").read_text()
        assert "serve_main(build_app, factory=True)" in text, name
        assert f"acdg serve examples.{name}:build_app --factory" in text, name
    # `python examples/litestar_app.py` takes acdg serve's flags.
    async with standin(SCRIPT) as agent:
        port = free_port()
        argv = [sys.executable, "examples/litestar_app.py", "--host", "127.0.0.1", "--port",
                str(port), "--log-format", "json"]
        env = {"DEEPGRAM_URL": agent.url, "ACDG_TOKEN": ""}
        with process(argv, tmp_path / "example.log", env=env) as proc:
            await wait_for_http(f"http://127.0.0.1:{port}/health", proc)
            report = await run_call(f"ws://127.0.0.1:{port}/audiocodes",
                                    CallScript(utterances=(Utterance(),)))
        log = proc.log
    assert report.ok and report.media_format == "raw/lpcm16"
    assert '"message":"drain on SIGTERM' in log


async def test_plain_uvicorn_drains_on_sigterm(tmp_path: Path) -> None:
    async with standin(PLAIN) as agent:
        port = free_port()
        cwd = bridge_module(tmp_path, agent.url)
        argv = ["-m", "uvicorn", "voiceapp:app", "--port", str(port)]
        with process(argv, tmp_path / "uvicorn.log", cwd=cwd) as proc:
            base = f"127.0.0.1:{port}"
            await wait_for_http(f"http://{base}/audiocodes", proc)
            report, ready = await call_through_sigterm(
                proc, f"ws://{base}/audiocodes", f"http://{base}/audiocodes/ready")
            status = proc.wait()
        log = proc.log
    assert_polite_hangup(report)
    assert ready == 503
    assert status in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
    # The app configured no logging: the bridge's lines come with time and level, at
    # uvicorn's level (INFO), beside uvicorn's own.
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO    acdg_asgi\.serve: "
    assert re.search(stamp + r"drain on SIGTERM: calls get up to 2 s, then a polite hang-up "
                     r"\(server uvicorn", log), log
    assert re.search(stamp + "SIGTERM received: draining", log), log
    assert "INFO:     Started server process" in log
    # stock uvicorn: its default WebSocket protocol is taken over, and the log says so once
    assert log.count(TAKEN_OVER) == 1 and DIRECT_HINT not in log, log


async def test_readme_uvicorn_command_line_gives_the_direct_path(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("or from uvicorn's command"):]
    block = section[section.index("```sh\n") + 6: section.index("```\n", 6)]
    command = block.replace("\\\n", " ").split()
    assert command[:2] == ["uvicorn", "myapp:app"], block
    async with standin(PLAIN) as agent:
        port = free_port()
        cwd = bridge_module(tmp_path, agent.url)
        argv = ["-m", "uvicorn", "voiceapp:app", *command[2:], "--port", str(port)]
        with process(argv, tmp_path / "uvicorn.log", cwd=cwd) as proc:
            await wait_for_http(f"http://127.0.0.1:{port}/audiocodes", proc)
            report = await run_call(f"ws://127.0.0.1:{port}/audiocodes",
                                    CallScript(utterances=(Utterance(),)))
            log = proc.log
    assert report.ok, report.violations
    assert "WebSocket DirectWebSocketProtocol)" in log, log
    assert DIRECT_HINT not in log, log


async def test_gunicorn_uvicorn_workers_drain_on_sigterm(tmp_path: Path) -> None:
    pytest.importorskip("gunicorn")
    pytest.importorskip("uvicorn_worker")
    async with standin(PLAIN) as agent:
        port = free_port()
        cwd = bridge_module(tmp_path, agent.url)
        argv = ["-m", "gunicorn", "voiceapp:app", "-k", "uvicorn_worker.UvicornWorker",
                "-w", "1", "-b", f"127.0.0.1:{port}", "--graceful-timeout", "20"]
        with process(argv, tmp_path / "gunicorn.log", cwd=cwd) as proc:
            base = f"127.0.0.1:{port}"
            await wait_for_http(f"http://{base}/audiocodes", proc)
            report, ready = await call_through_sigterm(
                proc, f"ws://{base}/audiocodes", f"http://{base}/audiocodes/ready")
            status = proc.wait()
    assert_polite_hangup(report)
    assert ready == 503 and status == 0


async def test_hypercorn_one_process_drains_and_workers_say_why_not(tmp_path: Path) -> None:
    async with standin(PLAIN) as agent:
        cwd = bridge_module(tmp_path, agent.url)
        port = free_port()
        argv = ["-m", "hypercorn", "voiceapp:app", "-w", "0", "-b", f"127.0.0.1:{port}"]
        with process(argv, tmp_path / "hypercorn.log", cwd=cwd) as proc:
            base = f"127.0.0.1:{port}"
            await wait_for_http(f"http://{base}/audiocodes", proc)
            report, _ = await call_through_sigterm(
                proc, f"ws://{base}/audiocodes", f"http://{base}/audiocodes/ready")
            proc.wait()
        assert_polite_hangup(report)
        port = free_port()
        argv = ["-m", "hypercorn", "voiceapp:app", "-b", f"127.0.0.1:{port}"]
        with process(argv, tmp_path / "workers.log", cwd=cwd) as proc:
            await wait_for_http(f"http://127.0.0.1:{port}/audiocodes", proc)
            log = proc.log
    assert "hypercorn's worker processes never see it" in log
    assert "hypercorn -w 0" in log


async def test_readme_first_example_runs_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Use it in your app"):]
    code = section[section.index("```python\n") + 10: section.index("```\n", 10)]
    async with standin(SCRIPT) as agent:
        monkeypatch.setenv("DEEPGRAM_URL", agent.url)  # the stand-in instead of Deepgram
        monkeypatch.setenv("DEEPGRAM_API_KEY", "readme-key")
        namespace: dict[str, Any] = {}
        exec(compile(code, "README.md", "exec"), namespace)
        async with serve(namespace["app"], lifespan="on") as host:
            report = await run_call(f"ws://{host}/audiocodes",
                                    CallScript(utterances=(Utterance(),)),
                                    token="the-token-configured-in-live-hub")
            refused = await run_call(f"ws://{host}/audiocodes", CallScript(), token="wrong")
    assert report.ok and report.media_format == "raw/lpcm16", report.violations
    assert report.play_streams[0].alt_text == "Thanks for calling Acme. How can I help?"
    assert refused.connect_error is not None and "401" in refused.connect_error


async def test_uvicorn_workers_without_a_store_say_each_is_an_instance(tmp_path: Path) -> None:
    async with standin(PLAIN) as agent:
        port = free_port()
        cwd = bridge_module(tmp_path, agent.url)
        argv = ["-m", "uvicorn", "voiceapp:app", "--port", str(port), "--workers", "2"]
        with process(argv, tmp_path / "uvicorn.log", cwd=cwd,
                     env={"ACDG_REDIS_URL": ""}) as proc:
            await wait_for_http(f"http://127.0.0.1:{port}/audiocodes", proc)
            with anyio.fail_after(20):
                while proc.log.count("no shared store: each worker is an instance") < 2:  # noqa: ASYNC110
                    await anyio.sleep(0.1)


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, as a test bot with ``botAllowSelfSignedCert`` has."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


async def test_acdg_serve_speaks_wss_with_its_own_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    cert, key = self_signed(tmp_path)
    async with standin(PLAIN) as agent:
        port = free_port()
        argv = ["-m", "acdg_asgi.cli", "serve", "--path", "/audiocodes", "--host", "127.0.0.1",
                "--port", str(port), "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
        with process(argv, tmp_path / "serve.log", env={"DEEPGRAM_URL": agent.url}) as proc:
            monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts this cert
            await wait_for_http(f"https://127.0.0.1:{port}/audiocodes", proc)
            report = await run_call(f"wss://127.0.0.1:{port}/audiocodes",
                                    CallScript(utterances=(Utterance(),)))
            trust = ssl.create_default_context(cafile=str(cert))
            async with httpx.AsyncClient(verify=trust) as http:
                probe = await http.get(f"https://127.0.0.1:{port}/audiocodes")
        log = proc.log
    assert report.ok and report.media_format == "raw/lpcm16", report.connect_error
    assert (probe.status_code, probe.json()) == (200, PROBE)
    assert f"wss://127.0.0.1:{port}/audiocodes" in log


async def test_acdg_serve_workers_share_the_store_and_drain(
    tmp_path: Path, redis_url: str,
) -> None:
    async with standin(PLAIN) as agent:
        port, ops = free_port(), free_port()  # each worker serves the ops port too
        argv = ["-m", "acdg_asgi.cli", "serve", "--path", "/audiocodes", "--host", "127.0.0.1",
                "--port", str(port), "--ops-port", str(ops), "--workers", "2",
                "--drain-timeout", "1.5"]
        env = {"DEEPGRAM_URL": agent.url, "ACDG_REDIS_URL": redis_url}
        with process(argv, tmp_path / "serve.log", env=env) as proc:
            base = f"127.0.0.1:{port}"
            await wait_for_http(f"http://127.0.0.1:{ops}/ready", proc)
            report, _ = await call_through_sigterm(
                proc, f"ws://{base}/audiocodes", f"http://127.0.0.1:{ops}/ready")
            status = proc.wait()
        log = proc.log
    assert_polite_hangup(report)
    assert status == 0
    assert log.count("drain on SIGTERM") == 2  # one per worker process
