// The browser phone: a VoiceAI Connect (VAIC) caller in a web page.
//
// It speaks the AudioCodes Bot API in streaming mode to a bot WebSocket exactly as VAIC
// does, sends the microphone as 20 ms userStream.chunk frames, plays the bot's play
// streams, and judges what the bot sends against the protocol rules VAIC relies on.
// Everything a test needs to read is on window.acdgPhone.
"use strict";

(() => {
  const SCRIPT_URL = document.currentScript.src; // the worklet sits next to this file
  const FRAME_MS = 20;
  const ACCEPT_TIMEOUT_MS = 5000;
  const REPLY_TIMEOUT_MS = 5000;
  const VALIDATE_TIMEOUT_MS = 2000;
  const BYE_MS = 300; // VAIC's BYE round trip between a bot hangup and its session.end
  const STREAM_IDLE_MS = 1000; // an open stream this quiet is finished in all but name
  const OFFERED = ["raw/lpcm16", "raw/lpcm16_8", "raw/mulaw"]; // what the mic can produce
  // Replies that a hangup may cross on the wire: answers to what the page sent before it.
  const MAY_CROSS_HANGUP = new Set([
    "userStream.started", "userStream.stopped", "userStream.speech.started",
    "userStream.speech.stopped", "userStream.speech.hypothesis",
    "userStream.speech.recognition", "userStream.speech.committed", "playStream.stop",
    "connection.validated",
  ]);
  const BEFORE_ACCEPT = new Set(["session.accepted", "session.error", "connection.validated"]);
  const BOT_TYPES = new Set([
    ...MAY_CROSS_HANGUP, "session.accepted", "session.error", "playStream.start",
    "playStream.chunk", "activities",
  ]);

  // --- media formats -----------------------------------------------------------------

  // "raw/lpcm16" -> {rate: 16000, mulaw: false, wav: false}; null if not one we can do.
  function parseFormat(token) {
    const m = /^(raw|wav)\/(lpcm16(?:_(8|24))?|mulaw)$/.exec(token || "");
    if (!m) return null;
    const mulaw = m[2] === "mulaw";
    const rate = mulaw ? 8000 : m[3] === "8" ? 8000 : m[3] === "24" ? 24000 : 16000;
    return { token, rate, mulaw, wav: m[1] === "wav", bytesPerSample: mulaw ? 1 : 2 };
  }

  // G.711 mu-law, as in the ITU reference code.
  function mulawEncode(sample) {
    const sign = sample < 0 ? 0x80 : 0;
    let s = Math.min(Math.abs(sample), 32635) + 0x84;
    let exponent = 7;
    for (let mask = 0x4000; (s & mask) === 0 && exponent > 0; mask >>= 1) exponent--;
    const mantissa = (s >> (exponent + 3)) & 0x0f;
    return ~(sign | (exponent << 4) | mantissa) & 0xff;
  }
  const MULAW = new Float32Array(256).map((_, byte) => {
    const b = ~byte & 0xff;
    const sample = ((((b & 0x0f) << 3) + 0x84) << ((b >> 4) & 7)) - 0x84;
    return (b & 0x80 ? -sample : sample) / 32768;
  });

  function toBase64(bytes) {
    let s = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(s);
  }

  function fromBase64(text) {
    const s = atob(text);
    const bytes = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) bytes[i] = s.charCodeAt(i);
    return bytes;
  }

  function encodeFrame(samples, fmt) {
    const out = new Uint8Array(samples.length * fmt.bytesPerSample);
    if (fmt.mulaw) {
      for (let i = 0; i < samples.length; i++) out[i] = mulawEncode(samples[i]);
    } else {
      const view = new DataView(out.buffer);
      for (let i = 0; i < samples.length; i++) view.setInt16(i * 2, samples[i], true); // LE
    }
    return out;
  }

  // Where the audio starts in a chunk that begins with a RIFF header (wav/* formats).
  function wavPayloadOffset(bytes) {
    if (bytes.length < 12 || String.fromCharCode(...bytes.subarray(0, 4)) !== "RIFF") return 0;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let at = 12; at + 8 <= bytes.length; at += 8 + view.getUint32(at + 4, true)) {
      if (String.fromCharCode(...bytes.subarray(at, at + 4)) === "data") return at + 8;
    }
    return Math.min(44, bytes.length);
  }

  // --- page state (read by tests as window.acdgPhone) -----------------------------------

  const phone = {
    state: "idle", // idle | connecting | validating | initiating | in-call | ending | ended
    conversationId: null,
    mediaFormat: null,
    transcript: [], // {role: "caller" | "agent", text}
    events: [], // {t, dir: "out" | "in" | "local" | "sse", type, text}
    bargeIns: [], // {streamId, t, playedMs, receivedMs, stopAfterMs}
    dtmfSent: [],
    functionCalls: [], // from the event stream
    violations: [], // {code, message, t}
    latencies: { response: [], bargeInStop: [] },
    playedMs: 0, // agent audio actually played, all streams
    receivedMs: 0, // agent audio received
    playbackGaps: 0, // times playback ran dry inside a stream
    chunksSent: 0,
    hangupReason: null,
    endReason: null,
    verdict: null,
    call: () => call(),
    hangup: () => hangup(),
    dtmf: (digit) => dtmf(digit),
  };
  window.acdgPhone = phone;

  let call_ = null; // what only the current call needs: sockets, audio, timers

  // --- small helpers -------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);
  const now = () => (call_ ? Math.round(performance.now() - call_.t0) : 0);

  function summary(msg) {
    const { type, conversationId, ...rest } = msg;
    if ("audioChunk" in rest) rest.audioChunk = `<${String(rest.audioChunk).length} chars>`;
    const text = JSON.stringify(rest);
    return text === "{}" ? "" : text.length > 240 ? text.slice(0, 240) + "…" : text;
  }

  function log(dir, type, text = "") {
    const event = { t: now(), dir, type, text };
    phone.events.push(event);
    const li = document.createElement("li");
    li.className = dir;
    const arrow = { out: "→", in: "←", local: "·", sse: "◆" }[dir];
    li.textContent = `${(event.t / 1000).toFixed(2).padStart(6)}s ${arrow} ${type} ${text}`;
    const list = $("log");
    list.append(li);
    while (list.children.length > 500) list.firstChild.remove();
    list.scrollTop = list.scrollHeight;
  }

  function violate(code, message) {
    if (phone.state === "ended") return;
    phone.violations.push({ code, message, t: now() });
    log("local", "violation", `${code}: ${message}`);
  }

  function say(role, text) {
    phone.transcript.push({ role, text });
    const li = document.createElement("li");
    li.className = role;
    li.textContent = text;
    $("transcript").append(li);
    li.scrollIntoView({ block: "nearest" });
  }

  function note(text, kind = "") {
    const li = document.createElement("li");
    li.className = `note ${kind}`;
    li.textContent = text;
    $("transcript").append(li);
    li.scrollIntoView({ block: "nearest" });
  }

  function setState(state) {
    phone.state = state;
    $("status").textContent = state;
    $("status").dataset.state = state;
    const live = !["idle", "ended"].includes(state);
    $("call").disabled = live;
    $("hangup").disabled = !live;
    document.querySelectorAll("#keypad button").forEach((b) => (b.disabled = state !== "in-call"));
    $("config").disabled = live;
  }

  const median = (xs) => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length ? s[Math.floor((s.length - 1) / 2)] : null;
  };

  function renderStats() {
    const r = phone.latencies.response, b = phone.latencies.bargeInStop;
    $("stat-played").textContent = `${(phone.playedMs / 1000).toFixed(1)} s`;
    $("stat-response").textContent = r.length
      ? `${r[r.length - 1]} ms (median ${median(r)} ms, ${r.length}×)` : "–";
    $("stat-bargein").textContent = b.length
      ? b.map((ms) => (ms >= 0 ? `${ms} ms` : `${-ms} ms (the stop came first)`)).join(", ")
      : "–";
    $("stat-dtmf").textContent = phone.dtmfSent.join(" ") || "–";
    $("stat-sent").textContent = `${phone.chunksSent} × ${FRAME_MS} ms`;
  }

  // --- configuration ---------------------------------------------------------------------

  function defaultBotUrl() {
    const u = new URL(location.href);
    u.search = u.hash = "";
    u.pathname = u.pathname.replace(/\/phone\/?$/, "") || "/";
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    return u.href;
  }

  function loadConfig() {
    const q = new URLSearchParams(location.search);
    const meta = document.querySelector('meta[name="acdg-events"]');
    $("cfg-url").value = q.get("url") || defaultBotUrl();
    $("cfg-token").value = q.get("token") || "";
    $("cfg-caller").value = q.get("caller") || "+15550100";
    $("cfg-format").value = OFFERED.includes(q.get("format")) ? q.get("format") : OFFERED[0];
    $("cfg-only").checked = q.get("only") === "1";
    // The server's own event stream only carries calls to the server: not for ?url=.
    const own = q.get("url") ? "" : meta && meta.content;
    $("cfg-events").value = q.get("events") || own || "";
    $("cfg-validate").checked = q.get("validate") === "1";
    $("cfg-processing").checked = q.get("processing") !== "0";
  }

  function readConfig() {
    const preferred = $("cfg-format").value;
    return {
      url: $("cfg-url").value.trim(),
      token: $("cfg-token").value.trim(),
      caller: $("cfg-caller").value.trim(),
      formats: $("cfg-only").checked
        ? [preferred] : [preferred, ...OFFERED.filter((f) => f !== preferred)],
      events: $("cfg-events").value.trim(),
      validate: $("cfg-validate").checked,
      processing: $("cfg-processing").checked,
    };
  }

  // --- the call ------------------------------------------------------------------------

  function reset() {
    Object.assign(phone, {
      conversationId: crypto.randomUUID(), mediaFormat: null, transcript: [], events: [],
      bargeIns: [], dtmfSent: [], functionCalls: [], violations: [],
      latencies: { response: [], bargeInStop: [] }, playedMs: 0, receivedMs: 0,
      playbackGaps: 0, chunksSent: 0, hangupReason: null, endReason: null, verdict: null,
    });
    $("transcript").replaceChildren();
    $("log").replaceChildren();
    $("verdict").textContent = "";
    $("verdict").className = "";
    $("hypothesis").textContent = "";
    call_ = {
      t0: performance.now(), ws: null, sse: null, ctx: null, mic: null, capture: null,
      player: null, fmt: null, config: readConfig(), accepted: false, streaming: false,
      timers: new Map(), streams: new Map(), open: null, lastStream: null,
      recognitionAt: null, hungUp: false, ending: false,
    };
  }

  async function call() {
    if (!["idle", "ended"].includes(phone.state)) return;
    reset();
    const c = call_;
    setState("connecting");
    $("settings").open = false; // the call view fits one screen
    log("local", "call", `${c.config.url} as ${c.config.caller || "(no caller id)"}`);
    try {
      await startAudio(c);
    } catch (err) {
      log("local", "microphone", String(err));
      return finish(`no microphone: ${err.message || err}`);
    }
    if (c !== call_) return;
    openEvents(c);
    if (c.config.validate) {
      setState("validating");
      await validate(c);
      if (c !== call_ || phone.state === "ended") return;
    }
    setState("initiating");
    const ws = connect(c, c.config.url);
    if (!ws) return;
    c.ws = ws;
    ws.onopen = () => {
      send({
        type: "session.initiate", conversationId: phone.conversationId, botName: "browser-phone",
        caller: c.config.caller, expectAudioMessages: true,
        supportedMediaFormats: c.config.formats,
      });
      timer("accept", ACCEPT_TIMEOUT_MS, () => {
        violate("session-unanswered", `no session.accepted within ${ACCEPT_TIMEOUT_MS} ms`);
        endCall("client-disconnected", "Client Side", "no answer from the bot");
      });
    };
    ws.onmessage = (e) => receive(e.data);
    ws.onclose = (e) => {
      if (c !== call_ || c.ending || phone.state === "ended") return;
      log("local", "socket.closed", `code ${e.code}${e.reason ? " " + e.reason : ""}`);
      if (c.accepted && !c.hungUp) {
        violate("closed-without-hangup", "the bot closed the socket mid-call without a hangup");
      }
      const hint = c.config.token
        ? " (is the token right, and does the server accept subprotocol acdg.bearer?)" : "";
      finish(c.accepted ? "socket closed by the bot" : `could not connect${hint}`);
    };
  }

  // A WebSocket with the token as a subprotocol: browsers cannot set Authorization.
  function connect(c, url) {
    try {
      const token = c.config.token;
      return token ? new WebSocket(url, ["acdg.bearer", token]) : new WebSocket(url);
    } catch (err) {
      log("local", "socket", String(err));
      finish(`cannot open ${url}: ${err.message}`);
      return null;
    }
  }

  // Live Hub's "validate bot connection": a socket of its own, closed after the answer.
  function validate(c) {
    return new Promise((resolve) => {
      const ws = connect(c, c.config.url);
      if (!ws) return resolve();
      const done = (ok, why) => {
        clearTimeout(t);
        if (!ok) violate("validate-unanswered", why);
        ws.onclose = ws.onmessage = null;
        ws.close(1000);
        resolve();
      };
      const late = `no connection.validated within ${VALIDATE_TIMEOUT_MS} ms`;
      const t = setTimeout(() => done(false, late), VALIDATE_TIMEOUT_MS);
      ws.onopen = () => {
        ws.send(JSON.stringify({ type: "connection.validate" }));
        log("out", "connection.validate");
      };
      ws.onmessage = (e) => {
        const msg = safeParse(e.data);
        log("in", msg ? msg.type : "<frame>", msg ? summary(msg) : "");
        if (msg && msg.type === "connection.validated") {
          if (msg.success !== true) violate("validated-without-success", "success is not true");
          done(true);
        }
      };
      ws.onclose = () => done(false, "socket closed before connection.validated");
    });
  }

  function send(msg) {
    const ws = call_ && call_.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    ws.send(JSON.stringify(msg));
    if (msg.type !== "userStream.chunk") log("out", msg.type, summary(msg));
  }

  function timer(name, ms, fn) {
    const c = call_;
    clearTimeout(c.timers.get(name));
    c.timers.set(name, setTimeout(() => c === call_ && phone.state !== "ended" && fn(), ms));
  }

  function clearTimer(name) {
    clearTimeout(call_.timers.get(name));
    call_.timers.delete(name);
  }

  function activity(name, value) {
    return { type: "event", name, value, id: crypto.randomUUID(),
             timestamp: new Date().toISOString() };
  }

  function dtmf(digit) {
    if (phone.state !== "in-call" || !/^[0-9*#]$/.test(String(digit))) return false;
    send({ type: "activities", conversationId: phone.conversationId,
           activities: [activity("DTMF", String(digit))] });
    phone.dtmfSent.push(String(digit));
    note(`DTMF ${digit}`, "dtmf");
    renderStats();
    return true;
  }

  // The caller hangs up: VAIC's session.end, then close.
  function hangup() {
    if (["idle", "ended", "ending"].includes(phone.state)) return;
    endCall("client-disconnected", "Client Side", "you hung up");
  }

  function endCall(reasonCode, reason, why) {
    const c = call_;
    if (c.ending) return;
    c.ending = true;
    setState("ending");
    stopCapture(c);
    send({ type: "session.end", conversationId: phone.conversationId, reasonCode, reason });
    if (c.ws) c.ws.close(1000);
    finish(why);
  }

  function finish(why) {
    const c = call_;
    if (phone.state === "ended") return;
    for (const t of c.timers.values()) clearTimeout(t);
    if (c.open) {
      const s = c.streams.get(c.open);
      if (performance.now() - c.t0 - s.lastAt >= STREAM_IDLE_MS) {
        violate("unclosed-stream", `playStream ${c.open} was never stopped`);
      }
    }
    phone.endReason = why;
    phone.verdict = verdictText(c, why);
    setState("ended");
    log("local", "ended", why);
    note(`Call ended: ${why}`, "end");
    const v = $("verdict");
    v.textContent = phone.verdict;
    v.className = phone.violations.length ? "bad" : c.accepted ? "ok" : "none";
    stopCapture(c);
    if (c.ws && c.ws.readyState <= WebSocket.OPEN) c.ws.close(1000);
    if (c.ctx) setTimeout(() => c.ctx.close().catch(() => {}), 200);
    if (c.sse) setTimeout(() => c.sse.close(), 2000); // let the bridge's session_end through
    renderStats();
  }

  // "OK" for a call in which the bot kept every rule the page checks.
  function verdictText(c, why) {
    if (!phone.violations.length) return c.accepted ? "OK" : `no call (${why})`;
    const counts = new Map();
    for (const v of phone.violations) counts.set(v.code, (counts.get(v.code) || 0) + 1);
    const list = [...counts].map(([code, n]) => (n > 1 ? `${code} (${n}×)` : code));
    return `${counts.size} rule${counts.size > 1 ? "s" : ""} broken: ${list.join(", ")}`;
  }

  // --- messages from the bot ---------------------------------------------------------------

  function safeParse(data) {
    try {
      const msg = JSON.parse(data);
      return msg && typeof msg === "object" && typeof msg.type === "string" ? msg : null;
    } catch {
      return null;
    }
  }

  function receive(data) {
    const c = call_;
    if (phone.state === "ended" || c.ending) return;
    if (typeof data !== "string") {
      log("in", "<binary>");
      return violate("binary-frame", "the protocol uses JSON text frames only");
    }
    const msg = safeParse(data);
    if (!msg) {
      log("in", "<invalid>", data.slice(0, 120));
      return violate("invalid-json", "a frame that is not a JSON object with a string type");
    }
    if (msg.type !== "playStream.chunk") log("in", msg.type, summary(msg));
    if (!BOT_TYPES.has(msg.type)) {
      return violate("unknown-message-type", `${msg.type} is not a bot-to-VAIC message`);
    }
    if (!c.accepted && !BEFORE_ACCEPT.has(msg.type)) {
      violate("before-accept", `${msg.type} before session.accepted`);
    }
    if (c.hungUp && !MAY_CROSS_HANGUP.has(msg.type)) {
      violate("after-hangup", `${msg.type} after the bot's ${c.hungUp} activity`);
    }
    const handler = HANDLERS[msg.type];
    if (handler) handler(msg, c);
  }

  const HANDLERS = {
    "session.accepted"(msg, c) {
      clearTimer("accept");
      if (c.accepted) return;
      const offered = c.config.formats;
      if (!msg.mediaFormat) violate("missing-media-format", "session.accepted without mediaFormat");
      else if (!offered.includes(msg.mediaFormat)) {
        violate("format-not-offered", `session.accepted chose ${msg.mediaFormat}`);
      }
      c.fmt = parseFormat(offered.includes(msg.mediaFormat) ? msg.mediaFormat : offered[0]);
      c.accepted = true;
      phone.mediaFormat = c.fmt.token;
      setState("in-call");
      note(`Connected (${c.fmt.token})`, "start");
      send({ type: "activities", conversationId: phone.conversationId, activities: [{
        ...activity("start"), value: undefined, language: navigator.language || "en-US",
        parameters: { caller: c.config.caller, callee: "browser-phone" } }] });
      startCapture(c);
      send({ type: "userStream.start", conversationId: phone.conversationId });
      timer("userStream", REPLY_TIMEOUT_MS, () =>
        violate("user-stream-unanswered", "userStream.start not answered with userStream.started"));
    },
    "session.error"(msg, c) {
      clearTimer("accept");
      note(`Refused: ${msg.reason || "(no reason)"}`, "end");
      finish(c.accepted ? `session.error: ${msg.reason}` : `refused: ${msg.reason}`);
    },
    "userStream.started"(msg, c) {
      clearTimer("userStream");
      c.streaming = true;
    },
    "userStream.stopped"(msg, c) {
      c.streaming = false;
    },
    "userStream.speech.started"(msg, c) {
      bargeIn(c);
    },
    "userStream.speech.hypothesis"(msg) {
      const alt = Array.isArray(msg.alternatives) && msg.alternatives[0];
      $("hypothesis").textContent = alt ? `${alt.text}…` : "";
    },
    "userStream.speech.recognition"(msg, c) {
      const alts = msg.alternatives;
      let text = msg.text;
      if (Array.isArray(alts) && alts.length) text = alts[0].text;
      else violate("flat-recognition", "recognition without an alternatives array");
      $("hypothesis").textContent = "";
      c.recognitionAt = performance.now();
      say("caller", String(text ?? ""));
    },
    "playStream.start"(msg, c) {
      const id = msg.streamId;
      if (typeof id !== "string") {
        return violate("malformed-message", "playStream.start without streamId");
      }
      if (c.open) violate("overlapping-streams", `playStream.start ${id} while ${c.open} is open`);
      if (c.streams.has(id)) violate("duplicate-stream-id", `streamId ${id} reused`);
      if (!msg.mediaFormat) {
        violate("missing-media-format", `playStream.start ${id} without mediaFormat`);
      } else if (!c.config.formats.includes(msg.mediaFormat)) {
        violate("format-not-offered", `playStream.start ${id} uses ${msg.mediaFormat}`);
      }
      const fmt = parseFormat(msg.mediaFormat) || c.fmt;
      const stream = { id, fmt, receivedMs: 0, playedMs: 0, carry: null, stopped: false,
                       bargedIn: false, startAt: now(), lastAt: now(), firstChunkAt: null,
                       stopAt: null, afterRecognition: c.recognitionAt };
      c.recognitionAt = null;
      c.streams.set(id, stream);
      c.open = c.lastStream = id;
      $("speaking").hidden = false;
      if (msg.altText) say("agent", msg.altText);
    },
    "playStream.chunk"(msg, c) {
      const id = msg.streamId;
      if (!c.open) {
        return violate("chunk-outside-stream", `playStream.chunk for ${id} with no stream open`);
      }
      if (id !== c.open) return violate("stream-id-mismatch", `chunk for ${id}, ${c.open} is open`);
      const s = c.streams.get(id);
      s.lastAt = now();
      let bytes;
      try {
        bytes = fromBase64(msg.audioChunk || "");
      } catch {
        return violate("bad-base64", `an audioChunk of ${id} is not valid base64`);
      }
      if (s.firstChunkAt === null) {
        s.firstChunkAt = s.lastAt;
        if (s.afterRecognition !== null) {
          phone.latencies.response.push(Math.round(performance.now() - s.afterRecognition));
          renderStats();
        }
      }
      if (s.fmt.wav) bytes = bytes.subarray(wavPayloadOffset(bytes));
      play(c, s, bytes);
    },
    "playStream.stop"(msg, c) {
      const id = msg.streamId;
      const s = c.streams.get(id);
      if (!c.open) {
        // A stream left open at a hangup (already judged) may still be stopped late.
        if (!s) return violate("stop-outside-stream", `playStream.stop for unknown stream ${id}`);
        if (s.stopped) return violate("stop-outside-stream", `second playStream.stop for ${id}`);
      } else if (id !== c.open) {
        return violate("stream-id-mismatch", `playStream.stop for ${id}, ${c.open} is open`);
      }
      s.stopped = true;
      s.stopAt = now();
      c.open = null;
      if (c.player) c.player.port.postMessage({ type: "end", stream: id });
      const b = phone.bargeIns.find((x) => x.streamId === id && x.stopAfterMs === null);
      if (b) recordStop(b, s.stopAt - b.t);
      if (s.bargedIn) $("speaking").hidden = true;
    },
    activities(msg, c) {
      if (!Array.isArray(msg.activities)) {
        return violate("malformed-message", "activities is not a list");
      }
      for (const a of msg.activities) botActivity(a || {}, c);
    },
  };
  HANDLERS["userStream.speech.stopped"] = HANDLERS["userStream.speech.committed"] = () => {};

  function botActivity(a, c) {
    const p = a.activityParams || {};
    switch (a.name) {
      case "hangup":
      case "transfer":
      case "handover": {
        const hangup = a.name === "hangup";
        if (!hangup && !p.transferTarget) {
          violate("bad-transfer", "transfer without activityParams.transferTarget");
        }
        if (c.open) violate("unclosed-stream", `${a.name} while playStream ${c.open} is open`);
        c.open = null;
        if (hangup) phone.hangupReason = p.hangupReason ?? null;
        if (c.hungUp) return;
        c.hungUp = a.name;
        // As VAIC: the line goes down at once (no more caller audio), the BYE is answered,
        // then session.end; bot messages in between are judged as "after hangup".
        stopCapture(c);
        const [code, reason] = hangup ? ["bot-disconnected", "Bot Side"]
                                      : ["transferred", "Transferred"];
        const why = hangup ? `the agent hung up (${p.hangupReason ?? "no reason given"})`
          : `transfer to ${p.transferTarget}${p.handoverReason ? ` (${p.handoverReason})` : ""}`;
        timer("bye", BYE_MS, () => endCall(code, reason, why));
        return;
      }
      case "playUrl":
        if (!p.playUrlUrl) violate("bad-play-url", "playUrl without playUrlUrl");
        return note(`Play URL ${p.playUrlUrl}${p.playUrlAltText ? ` (${p.playUrlAltText})` : ""}`);
      case "sendDtmf":
        if (!/^[0-9*#A-D]{1,20}$/.test(p.dtmfDigits || "")) {
          violate("bad-send-dtmf", "sendDtmf without valid activityParams.dtmfDigits");
        }
        return note(`Agent sent DTMF ${p.dtmfDigits}`, "dtmf");
      default:
        if (a.type === "message" && a.text) return note(`Agent text: ${a.text}`);
        const params = Object.keys(p).length ? ` ${JSON.stringify(p)}` : "";
        return note(`Activity ${a.name || a.type}${params}`);
    }
  }

  // --- barge-in ---------------------------------------------------------------------------

  // The caller talks while agent audio is audible: stop playback at once, as VAIC does
  // with barge-in on. The bot may stop its stream just before or just after this marker.
  function bargeIn(c) {
    const s = c.lastStream && c.streams.get(c.lastStream);
    const audible = s && !s.bargedIn && (!s.stopped || s.receivedMs - s.playedMs > 25);
    if (!audible) return;
    s.bargedIn = true;
    if (c.player) c.player.port.postMessage({ type: "flush" });
    const b = { streamId: s.id, t: now(), playedMs: Math.round(s.playedMs),
                receivedMs: Math.round(s.receivedMs), stopAfterMs: null, final: false };
    phone.bargeIns.push(b);
    $("speaking").hidden = true;
    if (s.stopped) recordStop(b, s.stopAt - b.t); // the stop came first
    else timer(`barge-${s.id}`, REPLY_TIMEOUT_MS, () =>
      violate("barge-in-not-stopped", `playStream ${s.id} not stopped after speech.started`));
  }

  function recordStop(b, ms) {
    clearTimer(`barge-${b.streamId}`);
    b.stopAfterMs = ms;
    phone.latencies.bargeInStop.push(ms);
    renderStats();
  }

  function noteBargeIn(b) {
    note(`Barge-in: the agent had played ${(b.playedMs / 1000).toFixed(1)} s ` +
         `of ${(b.receivedMs / 1000).toFixed(1)} s received`, "barge");
  }

  // --- audio --------------------------------------------------------------------------------

  async function startAudio(c) {
    if (!navigator.mediaDevices) throw new Error("getUserMedia needs https or localhost");
    const p = c.config.processing; // echo cancellation matters with speakers
    c.mic = await navigator.mediaDevices.getUserMedia({ audio: {
      channelCount: 1, echoCancellation: p, noiseSuppression: p, autoGainControl: p } });
    c.ctx = new AudioContext({ latencyHint: "interactive" });
    await c.ctx.audioWorklet.addModule(new URL("phone-worklet.js", SCRIPT_URL).href);
    await c.ctx.resume();
    c.player = new AudioWorkletNode(c.ctx, "acdg-player", { outputChannelCount: [1] });
    c.player.connect(c.ctx.destination);
    c.player.port.onmessage = ({ data }) => {
      if (c !== call_) return;
      let total = 0;
      for (const [id, samples] of Object.entries(data.played)) {
        const s = c.streams.get(id);
        if (!s) continue;
        s.playedMs = Math.min(s.receivedMs, (samples / s.fmt.rate) * 1000);
        total += s.playedMs;
      }
      phone.playedMs = Math.round(total);
      phone.playbackGaps = data.gaps;
      for (const b of phone.bargeIns) {
        if (b.final) continue;
        b.playedMs = Math.round(c.streams.get(b.streamId).playedMs); // as of the flush
        b.final = true;
        noteBargeIn(b);
      }
      const s = c.lastStream && c.streams.get(c.lastStream);
      if (s && s.stopped && !data.queued) $("speaking").hidden = true;
      renderStats();
    };
  }

  // Capture starts once the format is agreed: the worklet resamples to that rate.
  function startCapture(c) {
    c.capture = new AudioWorkletNode(c.ctx, "acdg-capture", {
      numberOfOutputs: 0, processorOptions: { targetRate: c.fmt.rate, frameMs: FRAME_MS } });
    c.source = c.ctx.createMediaStreamSource(c.mic);
    c.source.connect(c.capture);
    c.capture.port.onmessage = ({ data }) => {
      if (c !== call_ || !c.streaming || c.hungUp || c.ending) return;
      send({ type: "userStream.chunk", conversationId: phone.conversationId,
             audioChunk: toBase64(encodeFrame(data, c.fmt)) });
      phone.chunksSent++;
      if (phone.chunksSent % 25 === 0) renderStats();
    };
  }

  function stopCapture(c) {
    c.streaming = false;
    if (c.source) c.source.disconnect();
    if (c.capture) c.capture.port.onmessage = null;
    if (c.mic) c.mic.getTracks().forEach((t) => t.stop());
  }

  function play(c, s, bytes) {
    if (s.carry) { // an odd byte left from the previous chunk
      const joined = new Uint8Array(s.carry.length + bytes.length);
      joined.set(s.carry);
      joined.set(bytes, s.carry.length);
      bytes = joined;
      s.carry = null;
    }
    const usable = bytes.length - (bytes.length % s.fmt.bytesPerSample);
    if (usable < bytes.length) s.carry = bytes.slice(usable);
    const n = usable / s.fmt.bytesPerSample;
    if (n === 0) return;
    const samples = new Float32Array(n);
    if (s.fmt.mulaw) for (let i = 0; i < n; i++) samples[i] = MULAW[bytes[i]];
    else {
      const view = new DataView(bytes.buffer, bytes.byteOffset, usable);
      for (let i = 0; i < n; i++) samples[i] = view.getInt16(i * 2, true) / 32768;
    }
    s.receivedMs += (n / s.fmt.rate) * 1000;
    phone.receivedMs += (n / s.fmt.rate) * 1000;
    if (s.bargedIn) return; // VAIC has stopped this prompt; late audio is not played
    c.player.port.postMessage({ type: "chunk", stream: s.id, samples, rate: s.fmt.rate },
                              [samples.buffer]);
  }

  // --- optional event stream from the server ----------------------------------------------

  // The bridge's events for this call (text/event-stream), read with fetch rather than
  // EventSource so that the token can go in an Authorization header. The stream replays
  // the call from its start and ends after session_end; a dropped one resumes after the
  // last event id. It never disturbs the call: after a few failures it is given up.
  function openEvents(c) {
    const base = c.config.events;
    if (!base || typeof fetch === "undefined") return;
    let url;
    try {
      url = new URL(base, location.href);
    } catch {
      return log("local", "events", `not a URL: ${base}`);
    }
    url.searchParams.set("call", phone.conversationId);
    const abort = new AbortController();
    c.sse = { close: () => abort.abort() };
    const headers = { Accept: "text/event-stream" };
    if (c.config.token) headers.Authorization = `Bearer ${c.config.token}`;
    let lastId = null;
    let failures = 0;
    const onEvent = (name, text, id) => {
      if (c !== call_) return false;
      if (id) lastId = id;
      failures = 0;
      let data;
      try {
        data = JSON.parse(text);
      } catch {
        data = { text };
      }
      try {
        showEvent(name, data);
      } catch (err) {
        log("local", "events", `could not show ${name}: ${err}`);
      }
      return name === "session_end";
    };
    (async () => {
      while (c === call_ && !abort.signal.aborted) {
        try {
          if (lastId !== null) headers["Last-Event-ID"] = lastId;
          const res = await fetch(url.href, { headers, signal: abort.signal, cache: "no-store" });
          if (res.status >= 400 && res.status < 500) failures = 2; // will not get better
          if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
          if (await acdgReadEvents(res.body, onEvent)) return;
        } catch (err) {
          if (abort.signal.aborted) return;
          if (++failures === 3) return log("local", "events", "event stream unavailable");
        }
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    })();
  }

  function showEvent(name, data) {
    const latency = Object.entries(data || {})
      .filter(([k, v]) => /latency/i.test(k) && typeof v === "number")
      .map(([k, v]) => `${k}=${v < 10 ? (v * 1000).toFixed(0) + " ms" : v}`).join(" ");
    switch (name) {
      case "function_call_request":
        for (const f of data.functions || []) {
          phone.functionCalls.push({ name: f.name, arguments: f.arguments });
          note(`Function call ${f.name}(${f.arguments ?? ""})`, "fn");
          log("sse", name, `${f.name} ${f.arguments ?? ""}`);
        }
        return;
      case "agent_thinking":
        return log("sse", name, data.content || "");
      case "user_started_speaking":
        return log("sse", name, data.interrupted
          ? `barge-in: agent audio sent ${Math.round(data.agent_audio_sent_ms)} ms, ` +
            `heard ${Math.round(data.agent_audio_heard_ms)} ms` : "");
      case "session_end": {
        const rec = data.record || {};
        const extra = Object.entries(rec).filter(([k]) => /latency/i.test(k))
          .map(([k, v]) => `${k}=${v}`).join(" ");
        return log("sse", name, `${data.reason || ""} ${extra}`.trim());
      }
      default: {
        const { session_id, conversation_id, at, ...rest } = data || {};
        const text = JSON.stringify(rest);
        return log("sse", name, latency || (text.length > 200 ? text.slice(0, 200) + "…" : text));
      }
    }
  }

  // --- wiring ----------------------------------------------------------------------------

  function setup() {
    loadConfig();
    const pad = $("keypad");
    for (const key of "123456789*0#") {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = key;
      b.addEventListener("click", () => dtmf(key));
      pad.append(b);
    }
    $("call").addEventListener("click", () => call());
    $("hangup").addEventListener("click", () => hangup());
    document.addEventListener("keydown", (e) => {
      if (e.target.closest("input, select") || !/^[0-9*#]$/.test(e.key)) return;
      dtmf(e.key);
    });
    setState("idle");
    renderStats();
  }

  setup();
})();
