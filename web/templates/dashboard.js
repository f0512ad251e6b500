// The live dashboard: one WebSocket, one status frame a second, drawn with the DOM and a canvas.
// Nothing is fetched but the socket; every value is written with textContent (app ids are data).
"use strict";
(function () {
  const HISTORY_SECONDS = 300;
  const RECONNECT_MS = 2000;
  const COLOURS = ["#58a6ff", "#3fb950", "#d29922", "#f778ba", "#a5d6ff", "#ff7b72", "#bc8cff"];
  let points = [];
  let previousBridge = null;

  const byId = (id) => document.getElementById(id);
  const number = (value) => Math.round(value).toLocaleString("en-US");

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function replaceRows(tbody, rows) {
    tbody.replaceChildren(...rows);
  }

  function setConnection(state, text) {
    const element = byId("connection");
    element.className = "state " + state;
    element.textContent = text;
  }

  // --- tables --------------------------------------------------------------------------------
  function renderPools(pools) {
    replaceRows(byId("pools").tBodies[0], pools.map((pool) => {
      const row = document.createElement("tr");
      row.dataset.series = pool.name;
      cell(row, pool.name, "name");
      const tokenPool = pool.tpm > 0;
      cell(row, tokenPool ? number(pool.used_tokens) : "–", "tokens-used");
      cell(row, tokenPool ? number(pool.locked_tokens) : "–", "tokens-locked");
      cell(row, tokenPool ? number(pool.tpm) : "–", "tpm");
      cell(row, number(pool.used_requests + pool.locked_requests), "requests-used");
      cell(row, number(pool.rpm), "rpm");
      cell(row, number(pool.locked_requests), "locks");
      cell(row, pool.reset_time_seconds.toFixed(0) + " s", "reset");
      // Per lane: tokens for token pools, requests for Whisper; whether the interactive reserve
      // is held back from batch now, and any cool-down after a 429 or 5xx.
      const lane = (name) => {
        const usage = pool.lanes[name];
        return number(tokenPool ? usage.tokens : usage.requests);
      };
      const held = pool.reserve_active ? " (reserve held)" : "";
      const cooling = pool.cooldown_s > 0 ? " (cooling " + pool.cooldown_s.toFixed(0) + " s)" : "";
      cell(row, lane("interactive") + held, "lane-interactive");
      cell(row, lane("batch") + cooling, "lane-batch");
      return row;
    }));
  }

  function renderApps(pools) {
    const container = byId("apps");
    const blocks = [];
    for (const pool of pools) {
      const unit = pool.tpm > 0 ? "tokens" : "requests";
      const apps = Object.entries(pool.apps);
      const total = apps.reduce((sum, [, usage]) => sum + usage[unit], 0);
      if (total === 0) continue;
      const title = document.createElement("p");
      title.className = "pool-name";
      title.textContent = pool.name + " (" + unit + ")";
      blocks.push(title);
      for (const [app, usage] of apps.sort((a, b) => b[1][unit] - a[1][unit])) {
        const row = document.createElement("div");
        row.className = "app-row";
        row.dataset.app = app;
        const name = document.createElement("span");
        name.textContent = app;
        const bar = document.createElement("div");
        bar.className = "bar";
        const fill = document.createElement("span");
        fill.style.width = (100 * usage[unit] / total).toFixed(1) + "%";
        bar.appendChild(fill);
        const share = document.createElement("span");
        share.className = "share";
        share.textContent = number(usage[unit]) + " · " + (100 * usage[unit] / total).toFixed(0) + "%";
        row.append(name, bar, share);
        blocks.push(row);
      }
    }
    if (blocks.length === 0) {
      const empty = document.createElement("p");
      empty.className = "muted";
      empty.textContent = "no usage in the window";
      blocks.push(empty);
    }
    container.replaceChildren(...blocks);
  }

  function renderQueues(queues, inProgress) {
    replaceRows(byId("queues").tBodies[0], queues.map((queue) => {
      const row = document.createElement("tr");
      row.dataset.queue = queue.name;
      cell(row, queue.name);
      cell(row, number(queue.depth), "depth");
      return row;
    }));
    byId("in-progress").textContent = number(inProgress);
  }

  function renderBridge(bridge, time) {
    const beating = bridge.bridges.filter((b) => b.alive).length;
    byId("bridge-state").textContent = beating ? "(" + beating + " running)" : "(no heartbeat)";
    // The counters are totals kept in Redis: say since when they count.
    const starts = bridge.routes.map((route) => route.counting_since).filter((t) => t);
    byId("bridge-since").textContent = starts.length
      ? "counting since " + new Date(Math.min(...starts) * 1000).toLocaleString()
      : "";
    const before = previousBridge;
    replaceRows(byId("bridge").tBodies[0], bridge.routes.map((route) => {
      const row = document.createElement("tr");
      row.dataset.queue = route.in_queue;
      cell(row, route.in_queue + " → " + route.processor + " → " + route.out_queue);
      cell(row, number(route.received), "received");
      cell(row, number(route.published), "published");
      cell(row, number(route.sent), "sent");
      const old = before && before.routes.find((r) => r.in_queue === route.in_queue);
      const seconds = before ? time - before.time : 0;
      cell(row, old && seconds > 0 ? ((route.sent - old.sent) / seconds).toFixed(1) : "–", "rate");
      cell(row, number(route.outbox_lag), "lag");
      cell(row, number(route.dead_lettered), route.dead_lettered > 0 ? "dead" : "");
      return row;
    }));
    previousBridge = { time: time, routes: bridge.routes };
  }

  // --- chart ---------------------------------------------------------------------------------
  function percentOf(value) {
    // Token pools are charted by tokens, Whisper (requests only) by requests.
    return value.tpm > 0 ? 100 * value.tokens / value.tpm : 100 * value.requests / value.rpm;
  }

  function drawChart() {
    const canvas = byId("chart");
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth, height = canvas.clientHeight;
    canvas.width = width * ratio;
    canvas.height = height * ratio;
    const ctx = canvas.getContext("2d");
    ctx.scale(ratio, ratio);
    const left = 40, right = 10, top = 10, bottom = 22;
    const plotW = width - left - right, plotH = height - top - bottom;
    const now = points.length ? points[points.length - 1].t : Date.now() / 1000;
    const x = (t) => left + plotW * (1 - (now - t) / HISTORY_SECONDS);
    const y = (pct) => top + plotH * (1 - Math.min(pct, 110) / 110);

    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#8b98a5";
    ctx.strokeStyle = "#2d3a45";
    ctx.lineWidth = 1;
    for (const pct of [0, 25, 50, 75, 100]) {
      ctx.beginPath();
      ctx.moveTo(left, y(pct));
      ctx.lineTo(width - right, y(pct));
      ctx.stroke();
      ctx.fillText(pct + "%", 4, y(pct) + 4);
    }
    for (let minutes = 0; minutes <= HISTORY_SECONDS / 60; minutes++) {
      ctx.fillText(minutes === 0 ? "now" : "-" + minutes + "m", x(now - 60 * minutes) - 10, height - 6);
    }

    const names = [...new Set(points.flatMap((point) => Object.keys(point.series)))].sort();
    const legend = [];
    names.forEach((name, index) => {
      const colour = COLOURS[index % COLOURS.length];
      ctx.strokeStyle = colour;
      ctx.lineWidth = 2;
      ctx.beginPath();
      let drawing = false;
      for (const point of points) {
        const value = point.series[name];
        if (!value) { drawing = false; continue; }
        const px = x(point.t), py = y(percentOf(value));
        if (drawing) ctx.lineTo(px, py); else ctx.moveTo(px, py);
        drawing = true;
      }
      ctx.stroke();
      const item = document.createElement("li");
      item.style.setProperty("--series", colour);
      const latest = points.length ? points[points.length - 1].series[name] : null;
      item.textContent = name + (latest ? " " + percentOf(latest).toFixed(1) + "%" : "");
      legend.push(item);
    });
    byId("legend").replaceChildren(...legend);
  }

  // --- socket --------------------------------------------------------------------------------
  function handle(frame) {
    if (frame.type === "history") {
      points = frame.points;
    } else if (frame.type === "error") {
      setConnection("down", "status unavailable: " + frame.detail);
      return;
    } else if (frame.type === "status") {
      points.push(frame.point);
      const oldest = frame.point.t - HISTORY_SECONDS;
      while (points.length && points[0].t < oldest) points.shift();
      renderPools(frame.pools);
      renderApps(frame.pools);
      renderQueues(frame.queues, frame.in_progress);
      renderBridge(frame.bridge, frame.time);
      byId("updated").textContent = new Date(frame.time * 1000).toLocaleTimeString();
      setConnection("live", "live");
    }
    drawChart();
  }

  function connect() {
    const url = new URL("ws/status", location.href.replace(/dashboard.*$/, ""));
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    const token = new URLSearchParams(location.search).get("access_token");
    if (token) url.searchParams.set("access_token", token);
    const socket = new WebSocket(url);
    socket.onmessage = (event) => handle(JSON.parse(event.data));
    socket.onclose = () => {
      setConnection("down", "disconnected, retrying…");
      setTimeout(connect, RECONNECT_MS);
    };
  }

  window.addEventListener("resize", drawChart);
  connect();
})();
