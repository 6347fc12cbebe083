"""The deploy kit in deploy/, tested as far as a machine without containers allows.

- A call through nginx with the shipped config (templated for addresses only) in front
  of two ``acdg serve`` processes, run as compose runs them, and a real Redis: the call
  survives a dropped VAIC socket (the resume goes through nginx) and a migrate-drain of
  the instance that holds it (SIGTERM, as Kubernetes and Docker send it).
- The Grafana dashboard and the alert rules name only metrics the bridge exports.
- The Kubernetes manifests, the compose file and the Prometheus config parse, agree with
  each other and point at routes a running bridge answers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis
import yaml
from servers import ROOT, Process, free_port, process, wait_for_http

from acdg_asgi.cli import _parser, _serve_overrides
from acdg_asgi.cli.serve import build_app
from acdg_asgi.cli.settings import ServeSettings, load_settings
from acdg_asgi.testing.agent import AgentScript, StandInAgent, Turn
from acdg_asgi.testing.report import CallEvent, CallReport
from acdg_asgi.testing.script import CallScript, Utterance
from acdg_asgi.testing.vaic import run_call

pytestmark = pytest.mark.anyio

DEPLOY = ROOT / "deploy"
COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
MANIFESTS = [doc for f in sorted((DEPLOY / "kubernetes").glob("*.yaml"))
             for doc in yaml.safe_load_all(f.read_text()) if doc]


def serve_settings(argv: list[str]) -> ServeSettings:
    """What ``acdg <argv>`` would run with, through the command's own parser."""
    args = _parser().parse_args(argv)
    assert args.command == "serve"
    return load_settings(args.config, _serve_overrides(args))


def manifest(kind: str, name: str = "acdg") -> dict[str, Any]:
    (found,) = [d for d in MANIFESTS if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


# --- nginx, two acdg serve processes, Redis ---------------------------------------------------


def nginx_config(tmp: Path, listen: int, upstreams: list[int]) -> Path:
    """The shipped nginx/acdg.conf with only the addresses changed, in a main config that
    keeps nginx's files in ``tmp``."""
    shipped = (DEPLOY / "nginx" / "acdg.conf").read_text()
    text, listens = re.subn(r"listen 8080;", f"listen 127.0.0.1:{listen};", shipped)
    servers = iter(upstreams)
    text, hosts = re.subn(r"server bridge-[ab]:8000",
                          lambda m: f"server 127.0.0.1:{next(servers)}", text)
    assert (listens, hosts) == (1, 2), "the shipped config changed shape"
    (tmp / "acdg.conf").write_text(text)
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = " ".join(f"{kind}_temp_path {tmp}/{kind};" for kind in
                    ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    main = tmp / "nginx.conf"
    main.write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {tmp}/nginx.pid;\n"
        f"error_log {tmp}/error.log info;\nevents {{ worker_connections 256; }}\n"
        f"http {{\n  log_format lb '$request $status upstream $upstream_addr "
        f"$upstream_status';\n  access_log {tmp}/access.log lb;\n  {temp}\n"
        f"  include {tmp}/acdg.conf;\n}}\n")
    return main


class Bridge:
    """One ``acdg serve`` of the compose file: its process, its bot port and ops port."""

    def __init__(self, proc: Process, port: int, ops: int) -> None:
        self.proc, self.port, self.ops = proc, port, ops

    @property
    def ready(self) -> str:
        return f"http://127.0.0.1:{self.ops}/ready"


@contextmanager
def bridges(tmp: Path, agent_url: str, redis_url: str) -> Iterator[list[Bridge]]:
    """bridge-a and bridge-b as compose runs them (its command), on loopback ports."""
    with ExitStack() as stack:
        running = []
        for name in ("bridge-a", "bridge-b"):
            service = COMPOSE["services"][name]
            port, ops = free_port(), free_port()
            argv = ["-m", "acdg_asgi.cli", *service["command"], "--host", "127.0.0.1",
                    "--port", str(port), "--ops-port", str(ops)]
            env = {"ACDG_REDIS_URL": redis_url, "DEEPGRAM_URL": agent_url,
                   "DEEPGRAM_API_KEY": "", "ACDG_TOKEN": ""}
            proc = stack.enter_context(process(argv, tmp / f"{name}.log", env=env))
            running.append(Bridge(proc, port, ops))
        yield running


TALK = (Utterance(speech_ms=0, pause_ms=700),
        *(Utterance(speech_ms=300, pause_ms=700) for _ in range(9)))


@pytest.mark.deploy
async def test_a_call_through_the_shipped_nginx_survives_a_drop_and_a_migrate_drain(
    tmp_path: Path, redis_url: str,
) -> None:
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if nginx is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is needed: .ci/run installs it with apt")
        pytest.skip("nginx is not installed")
    redis.Redis.from_url(redis_url).flushdb()
    script = AgentScript(turns=tuple(Turn(f"Answer {i}.", heard="q") for i in range(12)),
                         ms_per_word=60)
    async with StandInAgent(script=script) as agent:
        with bridges(tmp_path, agent.url, redis_url) as running:
            for bridge in running:
                await wait_for_http(bridge.ready, bridge.proc)
            lb = free_port()
            conf = nginx_config(tmp_path, lb, [bridge.port for bridge in running])
            with process([nginx, "-p", str(tmp_path), "-c", str(conf)],
                         tmp_path / "nginx.out") as lb_proc:
                await wait_for_http(f"http://127.0.0.1:{lb}/audiocodes", lb_proc)
                url = f"ws://127.0.0.1:{lb}/audiocodes"
                report, holder = await call_drop_and_drain(url, running)
                status = holder.wait(30)
                async with httpx.AsyncClient() as http:
                    hidden = [(await http.get(f"http://127.0.0.1:{lb}{path}")).status_code
                              for path in ("/audiocodes/metrics", "/audiocodes/calls/x/y")]
                    probe = await http.get(f"http://127.0.0.1:{lb}/audiocodes")
            logs = {b.proc.log_path.stem: b.proc.log for b in running}
        lb_log = (tmp_path / "access.log").read_text()
        seeded = agent.connections[-1].settings
    # Both moves went through nginx, and the call carried on to its end, with its history.
    assert report.resumed is True and len(report.resume_gaps_ms) == 2, report.ended_by
    assert report.ended_by == "script-end", report.ended_by
    # The migrate closes the socket without a hangup, on purpose, so that VAIC resumes.
    assert [v.code for v in report.violations] == ["closed-without-hangup"]
    assert seeded is not None and not isinstance(seeded.agent, str)
    assert seeded.agent.context is not None and seeded.agent.greeting is None
    assert status == 0  # the drained instance exited cleanly on SIGTERM
    drained = logs[holder.log_path.stem]
    other = next(text for name, text in logs.items() if name != holder.log_path.stem)
    assert "SIGTERM received: draining" in drained and "migrated" in drained
    assert "taken over from" in other
    assert lb_log.count(" 101 upstream ") >= 3  # the call and its two resumes, upgraded
    assert hidden == [404, 404] and probe.status_code == 200


async def call_drop_and_drain(url: str, running: list[Bridge]) -> tuple[CallReport, Process]:
    """A call through ``url`` that drops its socket (resume through the same URL); after
    that resume, SIGTERM to the instance that holds the call (VAIC resumes again)."""
    accepted = anyio.Event()
    count = [0]

    def on_event(event: CallEvent) -> None:
        if event.type == "session.accepted":
            count[0] += 1
            if count[0] == 2:
                accepted.set()

    script = CallScript(utterances=TALK, drop_and_resume_at_ms=2500, resume_on_close=True,
                        resume_urls=(url,), max_duration_ms=30_000)
    reports: list[CallReport] = []
    async with anyio.create_task_group() as tg:

        async def call() -> None:
            reports.append(await run_call(url, script, on_event=on_event))

        tg.start_soon(call)
        with anyio.fail_after(20):
            await accepted.wait()
        await anyio.sleep(1.0)
        holder = await instance_with_the_call(running)
        holder.proc.send_signal(signal.SIGTERM)
    return reports[0], holder


async def instance_with_the_call(running: list[Bridge]) -> Process:
    async with httpx.AsyncClient() as http:
        with anyio.fail_after(10):
            while True:
                calls = [(await http.get(b.ready)).json()["calls"] for b in running]
                if sorted(calls) == [0, 1]:
                    return running[calls.index(1)].proc
                await anyio.sleep(0.05)


# --- the dashboard and the alert rules ------------------------------------------------------


def exported_metrics() -> set[str]:
    """Every series name ``acdg serve`` exports (with a shared store: the cluster gauge)."""
    bridge = build_app(ServeSettings())
    assert bridge.metrics is not None
    bridge.metrics.watch_cluster(lambda: 0)
    names = set()
    for family in bridge.metrics.registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}_{s}" for s in ("bucket", "sum", "count"))
        else:
            names.add(family.name)
    return names


def named_metrics(expr: str) -> set[str]:
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r'"[^"]*"', "", expr)
    words = set(re.findall(r"\b[a-z_][a-z0-9_]*\b", expr))
    promql = {"sum", "by", "rate", "increase", "histogram_quantile", "clamp_min", "max",
              "le", "instance", "reason", "cause", "source", "peer", "kind", "direction",
              "what", "job", "status", "stage", "outcome", "without", "on", "and", "or", "e"}
    return {w for w in words - promql if not re.fullmatch(r"\d+[smhd]?|e\d+", w)}


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "acdg-dashboard.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def alert_exprs() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [str(r["expr"]) for g in rules["groups"] for r in g["rules"]]


def test_dashboard_and_alerts_name_only_exported_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPGRAM_API_KEY", "not-used")
    exported = exported_metrics() | {"up"}  # ``up``: Prometheus' own, per scrape target
    dashboard, alerts = dashboard_exprs(), alert_exprs()
    assert len(dashboard) >= 15 and len(alerts) >= 10
    named = set()
    for expr in dashboard + alerts:
        unknown = named_metrics(expr) - exported
        assert not unknown, f"{expr!r} names {unknown}, which the bridge does not export"
        named |= named_metrics(expr)
    # Every metric of the bridge is on the dashboard: a new metric needs its panel in
    # deploy/grafana/acdg-dashboard.json.
    acdg = {n for n in exported if n.startswith("acdg_") and not n.endswith(("_sum", "_count"))}
    assert acdg - named == set(), "metrics with no panel on the dashboard"


def test_prometheus_scrapes_the_route_that_serves_metrics() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "acdg"  # the alert rules and dashboard select job="acdg"
    targets = job["static_configs"][0]["targets"]
    assert set(COMPOSE["services"]) >= {"redis", "bridge-a", "bridge-b", "nginx",
                                        "prometheus", "grafana"}
    for name, target in zip(("bridge-a", "bridge-b"), targets, strict=True):
        server = serve_settings(COMPOSE["services"][name]["command"]).server
        # Metrics where the bridge serves them: on the ops port alone, or below its path.
        where = (server.ops_port, "/metrics") if server.ops_port is not None else (
            server.port, f"{server.path}/metrics")
        assert (target, job["metrics_path"]) == (f"{name}:{where[0]}", where[1])
    for name in ("bridge-a", "bridge-b"):
        settings = serve_settings(COMPOSE["services"][name]["command"])
        assert settings.server.drain == "migrate"
        assert COMPOSE["services"][name]["environment"]["ACDG_REDIS_URL"].startswith("redis://")


# --- Kubernetes ----------------------------------------------------------------------------------


async def test_kubernetes_manifests_agree_and_point_at_routes_that_exist(
    tmp_path: Path, redis_url: str,
) -> None:
    deployment = manifest("Deployment")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    settings = serve_settings(container["args"])
    server = settings.server
    env = {e["name"]: e for e in container["env"]}
    assert env["ACDG_HOST"]["value"] == "0.0.0.0" and "ACDG_REDIS_URL" in env
    assert env["DEEPGRAM_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "acdg-secrets"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": server.port, "ops": server.ops_port}
    # Grace period: the drain, the hang-ups after it, and a margin.
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    assert server.drain_timeout_s is not None
    assert grace > server.drain_timeout_s + settings.limits.hangup_timeout_s + 1
    assert server.workers == 1 and server.drain == "migrate"
    pre_stop = " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
    assert "kill -TERM 1" in pre_stop
    ready = container["readinessProbe"]["httpGet"]
    live = container["livenessProbe"]["httpGet"]
    assert (ready["port"], live["port"]) == ("ops", "http")
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["ops"])
    # The startup check is acdg serve --check with the bridge's own arguments and environment.
    (check,) = pod["spec"]["initContainers"]
    assert check["image"] == container["image"] and check["env"] == container["env"]
    assert check["args"][:2] == ["serve", "--check"]
    assert [a for a in check["args"] if a != "--check"] == container["args"]
    assert check["securityContext"] == container["securityContext"]
    # Selectors and backends match what they select; the ops port is not exposed.
    labels = pod["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget"):
        spec = manifest(kind)["spec"]
        selector = spec["selector"].get("matchLabels", spec["selector"])
        assert selector.items() <= labels.items(), kind
    assert manifest("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    service = manifest("Service")["spec"]["ports"]
    assert [p["targetPort"] for p in service] == ["http"]
    ingress_paths = []
    for rule in manifest("Ingress")["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == "acdg" and backend["port"]["name"] == service[0]["name"]
            ingress_paths.append(path["path"])
    assert env["ACDG_REDIS_URL"]["value"].startswith("redis://redis:")
    assert manifest("Service", "redis")["spec"]["ports"][0]["port"] == 6379
    # Both containers run from these args, on loopback ports: the check passes, and the
    # bridge answers the probes, Prometheus and the ingress where they ask, and keeps
    # readiness and metrics off the bot's port.
    local = {"http": free_port(), "ops": free_port()}
    moved = ["--host", "127.0.0.1", "--port", str(local["http"]), "--ops-port", str(local["ops"])]
    async with StandInAgent() as agent:
        run_env = {"ACDG_REDIS_URL": redis_url, "DEEPGRAM_URL": agent.url,
                   "DEEPGRAM_API_KEY": "", "ACDG_TOKEN": ""}
        with process(["-m", "acdg_asgi.cli", *check["args"], *moved], tmp_path / "check.log",
                     env=run_env) as checked:
            checked_status = await anyio.to_thread.run_sync(checked.wait)  # the agent answers
        with process(["-m", "acdg_asgi.cli", *container["args"], *moved],
                     tmp_path / "serve.log", env=run_env) as proc:
            await wait_for_http(f"http://127.0.0.1:{local['ops']}/ready", proc)
            async with httpx.AsyncClient(follow_redirects=False) as http:
                asked = [(ready["port"], ready["path"]), (live["port"], live["path"]),
                         ("ops", annotations["prometheus.io/path"]),
                         *(("http", path) for path in ingress_paths)]
                answers = {(name, path): (await http.get(
                    f"http://127.0.0.1:{local[name]}{path}")).status_code
                    for name, path in asked}
                hidden = [(await http.get(f"http://127.0.0.1:{local['http']}{server.path}{p}")
                           ).status_code for p in ("/ready", "/metrics")]
    assert checked_status == 0, checked.log
    assert [line.split()[:2] for line in checked.log.splitlines()] == [
        ["OK", "agent"], ["OK", "store"], ["OK", "listen"], ["OK", "ops"], ["OK", "tls"]]
    assert set(answers.values()) == {200}, answers
    assert hidden == [404, 404]


def test_dockerfile_runs_acdg_serve_as_a_user_on_all_interfaces() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^USER 10001$", text, re.M)
    assert "ACDG_HOST=0.0.0.0" in text
    extras = re.search(r'pip install "/src\[([a-z,]+)\]"', text)
    assert extras is not None
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert set(extras.group(1).split(",")) <= set(project["optional-dependencies"])
    assert re.search(r'^ENTRYPOINT \["acdg"\]$', text, re.M)
    for copied in re.findall(r"^COPY (.+) /src", text, re.M):
        for name in copied.split():
            assert (ROOT / name).exists(), name
    run_as = int(manifest("Deployment")["spec"]["template"]["spec"]["securityContext"]
                 ["runAsUser"])
    assert run_as == 10001
