// The Calls panel: active calls from /ws/calls, updated as call events arrive from any replica.
// Every value is written with textContent (callers and call ids are data, not markup).
"use strict";
(function () {
  const RECONNECT_MS = 2000;
  const calls = new Map();
  const byId = (id) => document.getElementById(id);

  function socketUrl(path) {
    const url = new URL(path, location.href.replace(/dashboard.*$/, ""));
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    const token = new URLSearchParams(location.search).get("access_token");
    if (token) url.searchParams.set("access_token", token);
    return url;
  }

  function pageUrl(callId) {
    const url = new URL("dashboard/calls/" + encodeURIComponent(callId),
                        location.href.replace(/dashboard.*$/, ""));
    const token = new URLSearchParams(location.search).get("access_token");
    if (token) url.searchParams.set("access_token", token);
    return url.toString();
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function render() {
    const rows = [...calls.values()]
      .sort((a, b) => Number(b.started || 0) - Number(a.started || 0))
      .map((call) => {
        const row = document.createElement("tr");
        row.dataset.callId = call.call_id;
        const link = document.createElement("a");
        link.href = pageUrl(call.call_id);
        link.textContent = call.call_id.slice(0, 12);
        cell(row, "", "call").appendChild(link);
        cell(row, call.caller || "", "caller");
        cell(row, call.direction || "", "direction");
        cell(row, call.state || "", "call-state " + (call.state || ""));
        cell(row, call.media || call.transcription || "", "media");
        cell(row, call.last_event || "", "last-event");
        const started = Number(call.started || 0);
        cell(row, started ? new Date(started * 1000).toLocaleTimeString() : "", "started");
        return row;
      });
    byId("calls").tBodies[0].replaceChildren(...rows);
    byId("calls-empty").hidden = rows.length > 0;
  }

  function onMessage(message) {
    if (message.type === "calls") {
      calls.clear();
      for (const call of message.calls) calls.set(call.call_id, call);
    } else if (message.type === "call" && message.call_id) {
      // Ended calls stay visible in their final state until the page reloads.
      calls.set(message.call_id, { ...(calls.get(message.call_id) || {}), ...message });
    } else {
      return;
    }
    render();
  }

  function connect() {
    const socket = new WebSocket(socketUrl("ws/calls"));
    socket.onopen = () => { byId("calls-state").textContent = "live"; };
    socket.onmessage = (event) => onMessage(JSON.parse(event.data));
    socket.onclose = () => {
      byId("calls-state").textContent = "reconnecting…";
      setTimeout(connect, RECONNECT_MS);
    };
  }

  connect();
})();
