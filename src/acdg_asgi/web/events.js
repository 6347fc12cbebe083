// Server-Sent Events read from a fetch() response body, for the bridge's pages: fetch
// rather than EventSource, so that the token can go in an Authorization header.
//
// acdgReadEvents(body, onEvent) calls onEvent(name, data, id) for each event, data being
// the event's text; it resolves true once onEvent returns true (the stream is complete
// for the caller, and the body is cancelled), false if the body ended first.
"use strict";

async function acdgReadEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return false;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message", id = null;
      const data = [];
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") name = text;
        else if (field === "data") data.push(text);
        else if (field === "id") id = text;
      }
      if (data.length && onEvent(name, data.join("\n"), id)) {
        reader.cancel().catch(() => {});
        return true;
      }
    }
  }
}
