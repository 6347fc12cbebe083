// The supervisor page: the calls in progress, one call's transcript live, and the control
// actions. It reads <mount>/live/calls and the event streams at <mount>/live/events, and
// posts to <mount>/calls/<id>/<method>, every URL relative to the page. The token typed
// into the settings goes in an Authorization header, which is why the streams are read
// with fetch rather than EventSource. window.acdgLive is the page's own account.
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const live = {
    state: "idle", // idle, live, error
    note: "",
    calls: [], // as /live/calls lists them
    shared: false, // the list covers every instance
    following: null, // the conversation id followed
    callState: null,
    transcript: [], // {kind: "caller" | "agent" | "note", who, text}
    events: [], // {call, event, seq} of every call, latest last (bounded)
    actions: [], // {method, status, ok, error}
  };
  window.acdgLive = live;

  let token = "";
  let generation = 0; // bumped by each connect: older loops stop
  let callAbort = null;
  let refreshing = null;

  const auth = (extra = {}) => (token ? { ...extra, Authorization: `Bearer ${token}` } : extra);

  function setState(state, note = "") {
    live.state = state;
    live.note = note;
    $("status").dataset.state = state;
    $("status").textContent = note ? `${state}: ${note}` : state;
  }

  // --- the calls in progress ------------------------------------------------------------

  async function refreshCalls() {
    if (refreshing) return refreshing;
    refreshing = (async () => {
      try {
        const res = await fetch("live/calls", { headers: auth(), cache: "no-store" });
        if (res.status === 401) return setState("error", "unauthorized: is the token right?");
        const body = await res.json().catch(() => ({}));
        if (!res.ok) return setState("error", body.error || `HTTP ${res.status}`);
        live.calls = body.calls || [];
        live.shared = !!body.shared;
        setState("live");
        renderCalls();
      } catch (err) {
        setState("error", `calls unavailable (${err})`);
      } finally {
        refreshing = null;
      }
    })();
    return refreshing;
  }

  function renderCalls() {
    const rows = $("calls").tBodies[0];
    rows.replaceChildren(...live.calls.map((c) => {
      const tr = document.createElement("tr");
      tr.dataset.call = c.conversation_id;
      tr.classList.toggle("selected", c.conversation_id === live.following);
      const started = c.started ? new Date(c.started * 1000).toLocaleTimeString() : "";
      for (const text of [c.caller || "unknown", c.callee || "", started, c.owner, c.state]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.append(td);
      }
      tr.addEventListener("click", () => follow(c.conversation_id));
      return tr;
    }));
    $("no-calls").hidden = live.calls.length > 0;
    $("calls-note").textContent = live.shared ? "every instance" : "this instance";
  }

  // The stream of every call: the list is read again when a call starts, ends or changes.
  async function watchAll(mine) {
    let lastId = null;
    while (mine === generation) {
      try {
        const extra = { Accept: "text/event-stream" };
        if (lastId !== null) extra["Last-Event-ID"] = lastId;
        const res = await fetch("live/events", { headers: auth(extra), cache: "no-store" });
        if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
        await readEvents(res.body, (name, data, id) => {
          if (mine !== generation) return true;
          if (id) lastId = id;
          live.events.push({ call: data.conversation_id, event: name, seq: data.seq });
          if (live.events.length > 200) live.events.shift();
          if (/^(session_|transfer_)/.test(name)) refreshCalls();
          return false;
        });
      } catch (err) {
        if (mine !== generation) return;
      }
      await sleep(2000);
      refreshCalls();
    }
  }

  // --- one call --------------------------------------------------------------------------

  function follow(cid) {
    if (callAbort) callAbort.abort();
    const abort = (callAbort = new AbortController());
    live.following = cid;
    live.callState = null;
    live.transcript = [];
    $("call").hidden = false;
    $("call-id").textContent = cid;
    $("call-state").textContent = "";
    $("transcript").replaceChildren();
    $("action-result").textContent = "";
    renderCalls();
    const url = `live/events?call=${encodeURIComponent(cid)}`;
    (async () => {
      let lastId = null;
      let failures = 0;
      let handedOver = false;  // the last event: the old owner's end of a call that moved
      while (!abort.signal.aborted && failures < 3) {
        try {
          const extra = { Accept: "text/event-stream" };
          if (lastId !== null) extra["Last-Event-ID"] = lastId;
          const res = await fetch(url, { headers: auth(extra), signal: abort.signal,
                                         cache: "no-store" });
          if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
          let got = false;
          const done = await readEvents(res.body, (name, data, id) => {
            if (abort.signal.aborted) return true;
            if (id) lastId = id;
            failures = 0;
            got = true;
            show(name, data);
            handedOver = name === "session_end" && data.reason === "migrated";
            return name === "session_end" && !handedOver;
          });
          if (done) return;
          if (handedOver && !got) {  // the server waited for the next owner: none came
            live.callState = "ended";
            $("call-state").textContent = "ended";
            return line("note", "", "no other bridge instance took the call up");
          }
        } catch (err) {
          if (abort.signal.aborted) return;
          if (++failures === 3) line("note", "", `event stream unavailable (${err})`);
        }
        await sleep(1000);
      }
    })();
  }

  function line(kind, who, text) {
    live.transcript.push({ kind, who, text });
    const li = document.createElement("li");
    li.dataset.kind = kind;
    li.dataset.who = who;
    li.textContent = text;
    $("transcript").append(li);
    li.scrollIntoView({ block: "nearest" });
  }

  function show(name, d) {
    const ms = (v) => `${Math.round(v || 0)} ms`;
    switch (name) {
      case "session_start":
        return line("note", "", `call from ${d.caller || "unknown"} (${d.media_format})`);
      case "session_resumed":
        return line("note", "", d.taken_over ? "call resumed on the bridge instance that took it over"
          : `VAIC reconnected after ${ms(d.gap_ms)}`);
      case "conversation_text":
        return d.role === "user" ? line("caller", "Caller", d.content)
          : line("agent", "Agent", d.content);
      case "user_started_speaking":
        if (!d.interrupted) return;
        return line("note", "", `barge-in: the caller heard ${ms(d.agent_audio_heard_ms)} ` +
                    `of ${ms(d.agent_audio_sent_ms)}`);
      case "function_call_request":
        for (const f of d.functions || []) line("note", "", `function ${f.name}(${f.arguments ?? ""})`);
        return;
      case "warning":
        return line("note", "", `warning ${d.code}: ${d.description}`);
      case "dtmf":
        return line("note", "", `DTMF ${d.digits}`);
      case "transfer_started":
        return line("note", "", `transfer to ${d.destination}`);
      case "transfer_answered":
        return line("note", "", `transfer to ${d.destination} answered`);
      case "transfer_failed":
        return line("note", "", `transfer to ${d.destination} failed: ${d.reason || d.reason_code}`);
      case "latency_report": {
        const l = d.latency || {};
        const parts = Object.entries(l).map(([k, v]) => `${k.replace(/_ms$/, "")} ${ms(v)}`);
        return line("note", "", `latency: ${parts.join(", ")}`);
      }
      case "session_end":
        if (d.reason === "migrated") return line("note", "", "call handed over to another bridge instance");
        live.callState = "ended";
        $("call-state").textContent = "ended";
        return line("note", "", `call ended: ${d.reason}${d.detail ? ` (${d.detail})` : ""}`);
      default:
        return undefined;
    }
  }

  // --- control actions ------------------------------------------------------------------

  async function act(method, args) {
    const cid = live.following;
    if (!cid) return;
    const entry = { method, status: null, ok: false, error: null };
    live.actions.push(entry);
    const result = $("action-result");
    result.textContent = `${method}…`;
    try {
      const res = await fetch(`calls/${encodeURIComponent(cid)}/${method}`, {
        method: "POST", headers: auth({ "Content-Type": "application/json" }),
        body: JSON.stringify(args),
      });
      const body = await res.json().catch(() => ({}));
      entry.status = res.status;
      entry.ok = res.ok;
      entry.error = body.error || null;
      if (res.status === 404 && !body.error) entry.error = "no control route (control_auth=)";
    } catch (err) {
      entry.error = String(err);
    }
    result.dataset.ok = String(entry.ok);
    result.textContent = entry.ok ? `${method}: done` : `${method}: ${entry.error || entry.status}`;
  }

  // Events whose data is JSON (the bridge's): onEvent(name, object, id); others skipped.
  function readEvents(body, onEvent) {
    return acdgReadEvents(body, (name, text, id) => {
      let data;
      try {
        data = JSON.parse(text);
      } catch {
        return false;
      }
      return onEvent(name, data, id);
    });
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // --- wiring ---------------------------------------------------------------------------

  function connect() {
    token = $("cfg-token").value.trim();
    const mine = ++generation;
    if (live.following) follow(live.following);
    refreshCalls();
    watchAll(mine);
  }

  function setup() {
    const q = new URLSearchParams(location.search);
    $("cfg-token").value = q.get("token") || "";
    $("config").addEventListener("submit", (e) => {
      e.preventDefault();
      connect();
    });
    $("say").addEventListener("submit", (e) => {
      e.preventDefault();
      const content = $("say-text").value.trim();
      if (content) act("send_agent_message", { content, behavior: "queue" }); // after the agent's words
    });
    $("transfer").addEventListener("submit", (e) => {
      e.preventDefault();
      const destination = $("transfer-to").value.trim();
      if (destination) act("transfer", { destination });
    });
    $("hangup").addEventListener("click", () => act("end_session", { reason: "supervisor" }));
    setInterval(() => { if (generation) refreshCalls(); }, 5000);
    connect();
  }

  setup();
})();
