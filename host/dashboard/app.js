// eddy's live dashboard. It uses only eddy's public API: one WebSocket
// (/v1/ws) multiplexing every channel it shows, resumed with sequence numbers
// after a disconnect, and REST routes for snapshots (what was there before the
// page subscribed, and views no channel carries: live users, top pages,
// plugin and window counters). Repaints are throttled (tables and text at
// 2 Hz, charts at 1 Hz) and every buffer is bounded.
"use strict";

(function () {
  const $ = (sel) => document.querySelector(sel);
  const LIMITS = { events: 200, patterns: 50, pluginHistory: 40, windowStarts: 90, windowRows: 15, chartGroups: 5 };
  const RANK = { open: 1, early: 1, final: 2, correction: 2 };
  const PALETTE = ["#2f6fed", "#e8590c", "#2b8a3e", "#ae3ec9", "#c92a2a", "#0b7285", "#5c940d", "#862e9c"];

  // ---------------------------------------------------------------- state --
  const state = {
    key: localStorage.getItem("eddy.key") || "",
    connected: false,
    everConnected: false,
    stats: null,
    liveUsers: null,
    livePages: null,
    plugins: [],
    pluginHistory: [],
    patterns: [],
    patternFeed: [], // newest first
    patternSeen: new Set(),
    alerts: new Map(), // fingerprint -> latest transition
    alertRules: [],
    windows: new Map(), // name -> WindowView
    windowDefs: [],
    events: [], // newest first
    eventsPaused: false,
    eventsWhilePaused: 0,
    eventFilter: null,
    selectedEvent: null,
  };
  const dirty = new Set();
  const touch = (...parts) => parts.forEach((p) => dirty.add(p));

  // ------------------------------------------------------------ helpers --
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("data-")) e.setAttribute(k, v);
      else if (k === "title") e.title = v;
      else if (k === "style") e.setAttribute("style", v);
      else e[k] = v;
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  const fmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
  function num(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v !== "number") return String(v);
    return fmt.format(v);
  }
  function rate(v) {
    if (v === null || v === undefined) return "–";
    return v >= 100 ? fmt.format(Math.round(v)) : fmt.format(v);
  }
  function ago(ms) {
    if (!ms) return "–";
    const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    return Math.round(s / 3600) + " h ago";
  }
  function clock(ms) {
    return new Date(ms).toLocaleTimeString(undefined, { hour12: false });
  }
  function groupKey(group) {
    return JSON.stringify(group || {});
  }
  function groupLabel(group) {
    const vals = Object.values(group || {});
    return vals.length ? vals.map((v) => (v === null ? "∅" : String(v))).join(" · ") : "(all)";
  }
  function setText(sel, text) {
    const e = $(sel);
    if (e && e.textContent !== text) e.textContent = text;
  }
  function notice(text) {
    const n = $("#notice");
    n.textContent = text || "";
    n.hidden = !text;
  }
  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  // -------------------------------------------------------------- REST --
  class AuthNeeded extends Error {}
  async function api(path) {
    const headers = state.key ? { Authorization: "Bearer " + state.key } : {};
    const r = await fetch(path, { headers, cache: "no-store" });
    if (r.status === 401 || r.status === 403) throw new AuthNeeded(r.status === 401 ? "a read key is needed" : "this key has no read access");
    if (!r.ok) {
      let msg = r.status + " " + r.statusText;
      try {
        const body = await r.json();
        if (body && body.error) msg = body.error;
      } catch (_) { /* not JSON */ }
      throw new Error(path + ": " + msg);
    }
    return r.json();
  }
  // A poll that fails says so in the notice line; it never throws.
  async function poll(path, apply) {
    if (!state.connected) return;
    try {
      apply(await api(path));
    } catch (e) {
      if (e instanceof AuthNeeded) askKey(e.message);
      else if (state.connected) notice(e.message);
    }
  }

  // --------------------------------------------------------- WebSocket --
  // channel -> { filter, last, onData, onReset }
  const subs = new Map();
  let ws = null;
  let attempts = 0;
  let reconnectTimer = null;

  function wsUrl() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const q = state.key ? "?api_key=" + encodeURIComponent(state.key) : "";
    return proto + "//" + location.host + "/v1/ws" + q;
  }
  function send(msg) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
  }
  function sendSubscribe(channel) {
    const s = subs.get(channel);
    if (!s) return;
    const msg = { type: "subscribe", channel };
    if (s.filter) msg.filter = s.filter;
    if (s.last !== null) msg.since = s.last;
    send(msg);
  }
  // Subscribe once per channel; `since` (optional) resumes after a REST
  // snapshot that carried sequence numbers.
  function subscribe(channel, onData, opts) {
    if (subs.has(channel)) return;
    subs.set(channel, {
      filter: (opts && opts.filter) || null,
      last: opts && opts.since != null ? opts.since : null,
      onData,
      onSubscribed: (opts && opts.onSubscribed) || null,
    });
    sendSubscribe(channel);
  }
  function resubscribe(channel, filter) {
    const s = subs.get(channel);
    if (!s) return;
    send({ type: "unsubscribe", channel });
    s.filter = filter;
    s.last = null;
    sendSubscribe(channel);
  }

  function connect() {
    clearTimeout(reconnectTimer);
    setConn("connecting", attempts ? "reconnecting (attempt " + (attempts + 1) + ")…" : "connecting…");
    try {
      ws = new WebSocket(wsUrl());
    } catch (e) {
      scheduleReconnect();
      return;
    }
    ws.onopen = () => {
      attempts = 0;
      state.connected = true;
      setConn("up", "live");
      $("#banner").hidden = true;
      notice("");
      // Resume every subscription where it stopped, then refresh snapshots.
      for (const ch of subs.keys()) sendSubscribe(ch);
      refreshAll(true);
    };
    ws.onmessage = (ev) => {
      let m;
      try {
        m = JSON.parse(ev.data);
      } catch (_) {
        return;
      }
      onMessage(m);
    };
    ws.onclose = () => {
      const was = state.connected;
      state.connected = false;
      ws = null;
      if (was || !state.everConnected) showDisconnected();
      scheduleReconnect();
    };
    ws.onerror = () => { /* onclose follows */ };
  }
  function scheduleReconnect() {
    attempts += 1;
    const delay = Math.min(3000, 250 * 2 ** Math.min(attempts, 4));
    setConn("down", "disconnected — retrying in " + (delay / 1000).toFixed(1) + " s");
    reconnectTimer = setTimeout(connect, delay);
  }
  function showDisconnected() {
    const b = $("#banner");
    b.textContent = "Disconnected from eddy — reconnecting; every stream resumes where it stopped.";
    b.hidden = false;
  }
  function setConn(kind, text) {
    const dot = $("#conn-dot");
    dot.className = "dot" + (kind === "up" ? " up" : kind === "down" ? " down" : "");
    setText("#conn-text", text);
  }

  function onMessage(m) {
    switch (m.type) {
      case "welcome":
        state.everConnected = true;
        break;
      case "subscribed": {
        const s = subs.get(m.channel);
        if (s && s.last === null) s.last = m.head;
        if (s && s.onSubscribed) {
          const then = s.onSubscribed;
          s.onSubscribed = null;
          then(m.head);
        }
        break;
      }
      case "message": {
        const s = subs.get(m.channel);
        if (!s) return;
        if (s.last !== null && m.seq <= s.last) return; // seen already
        s.last = m.seq;
        s.onData(m.data, m.seq, m.channel);
        break;
      }
      case "error":
        onWsError(m);
        break;
      default:
        break; // heartbeat, pong, unsubscribed
    }
  }
  function onWsError(m) {
    const channel = m.request && m.request.channel;
    const s = channel && subs.get(channel);
    if (m.code === "since_too_old" || m.code === "since_in_future") {
      // The server restarted or we were away too long: continue from now,
      // and take the snapshot again so nothing shown is stale.
      if (s) {
        s.last = null;
        sendSubscribe(channel);
      }
      return;
    }
    if (m.code === "unknown_channel" && s) {
      subs.delete(channel);
      return;
    }
    if (m.code === "already_subscribed") return;
    if (channel === "events" && m.code === "bad_request") {
      setText("#event-filter-note", m.message);
      if (s) {
        s.filter = null;
        s.last = null;
        sendSubscribe("events");
      }
      return;
    }
    if (m.code === "slow_consumer") {
      notice("eddy closed this page's stream as too slow; it resumes at once.");
      return;
    }
    notice(m.message || m.code);
  }

  // ------------------------------------------------------------- charts --
  // A uPlot line chart whose series may change; it is rebuilt when they do.
  class Chart {
    // `spanMs`: how much time the x axis shows at least (ending now).
    constructor(container, spanMs) {
      this.container = container;
      this.span = spanMs / 1000;
      this.plot = null;
      this.signature = "";
      this.theme = "";
      if (window.ResizeObserver) {
        new ResizeObserver(() => {
          if (this.plot) this.plot.setSize(this.size());
        }).observe(container);
      }
    }
    size() {
      return { width: Math.max(200, this.container.clientWidth), height: 220 };
    }
    update(series, data) {
      if (!window.uPlot) {
        this.container.textContent = window.EDDY_NO_CHARTS || "charts are unavailable";
        return;
      }
      // The x axis covers at least `span` up to now: empty slots at both
      // ends, so one early point is not stretched over days.
      const now = Date.now() / 1000;
      const xs = data[0];
      const lo = Math.min(xs.length ? xs[0] : now, now - this.span);
      const hi = Math.max(xs.length ? xs[xs.length - 1] : now, now) + this.span / 30;
      const padded = [[lo, ...xs, hi]].concat(data.slice(1).map((ys) => [null, ...ys, null]));
      if (xs.length && xs[0] <= lo) padded[0][0] = xs[0] - 1;
      data = padded;
      const signature = JSON.stringify(series.map((s) => [s.label, s.color, !!s.dash]));
      const theme = document.documentElement.dataset.theme || "";
      if (!this.plot || signature !== this.signature || theme !== this.theme) {
        if (this.plot) this.plot.destroy();
        this.container.textContent = "";
        const axis = { stroke: cssVar("--muted"), grid: { stroke: cssVar("--border"), width: 1 }, ticks: { stroke: cssVar("--border") } };
        const opts = {
          ...this.size(),
          scales: { x: { time: true } },
          axes: [axis, { ...axis, size: 50 }],
          legend: { live: false },
          cursor: { drag: { x: false, y: false } },
          series: [{}].concat(
            series.map((s) => ({
              label: s.label,
              stroke: s.color,
              width: s.dash ? 1.5 : 2,
              dash: s.dash ? [6, 4] : undefined,
              points: { show: true, size: 6 },
              spanGaps: false,
              show: true,
            }))
          ),
        };
        this.plot = new window.uPlot(opts, data, this.container);
        this.signature = signature;
        this.theme = theme;
      } else {
        this.plot.setData(data);
      }
    }
  }

  // ------------------------------------------------------------ windows --
  // The latest result per (window start, group): final and correction
  // results replace anything; early results and polled open values replace
  // only other provisional values.
  class WindowView {
    constructor(def) {
      this.def = def;
      this.byStart = new Map();
      this.tile = null;
      this.chart = null;
    }
    put(r, kind) {
      if (!r || typeof r.start !== "number") return;
      let groups = this.byStart.get(r.start);
      if (!groups) {
        groups = new Map();
        this.byStart.set(r.start, groups);
        if (this.byStart.size > LIMITS.windowStarts) {
          const oldest = Math.min(...this.byStart.keys());
          this.byStart.delete(oldest);
        }
      }
      const k = groupKey(r.group);
      const old = groups.get(k);
      if (old && RANK[kind] < RANK[old.kind]) return;
      groups.set(k, { start: r.start, end: r.end, group: r.group || {}, values: r.values || {}, kind });
    }
    starts() {
      return [...this.byStart.keys()].sort((a, b) => a - b);
    }
    latestRows() {
      const starts = this.starts();
      const rows = [];
      for (let i = starts.length - 1; i >= 0 && rows.length < LIMITS.windowRows; i--) {
        const groups = [...this.byStart.get(starts[i]).values()];
        groups.sort((a, b) => firstNumber(b.values) - firstNumber(a.values));
        for (const g of groups) {
          if (rows.length >= LIMITS.windowRows) break;
          rows.push(g);
        }
        if (this.def.window && this.def.window.kind !== "session") break; // one window's groups
      }
      return rows;
    }
    // Chart data: the first numeric value per group over window starts, top
    // groups by total; provisional points as dashed twins joined to the last
    // final point.
    chartData() {
      const starts = this.starts();
      const totals = new Map();
      for (const groups of this.byStart.values()) {
        for (const [k, g] of groups) totals.set(k, (totals.get(k) || 0) + firstNumber(g.values));
      }
      const top = [...totals.entries()].sort((a, b) => b[1] - a[1]).slice(0, LIMITS.chartGroups).map((e) => e[0]);
      const xs = starts.map((s) => s / 1000);
      const series = [];
      const data = [xs];
      top.forEach((k, i) => {
        const color = PALETTE[i % PALETTE.length];
        let label = k;
        const solid = [];
        const dashed = [];
        let provisional = false;
        starts.forEach((s) => {
          const g = this.byStart.get(s).get(k);
          if (g) label = groupLabel(g.group);
          const v = g ? firstNumber(g.values) : null;
          const fin = g && RANK[g.kind] === 2;
          solid.push(fin ? v : null);
          dashed.push(g && !fin ? v : null);
          if (g && !fin) provisional = true;
        });
        // Join each provisional run to the final point before it.
        for (let j = 1; j < dashed.length; j++) {
          if (dashed[j] !== null && dashed[j - 1] === null && solid[j - 1] !== null) dashed[j - 1] = solid[j - 1];
        }
        series.push({ label, color });
        data.push(solid);
        if (provisional) {
          series.push({ label: label + " (provisional)", color, dash: true });
          data.push(dashed);
        }
      });
      return { series, data };
    }
  }
  function firstNumber(values) {
    for (const v of Object.values(values || {})) if (typeof v === "number") return v;
    return 0;
  }

  function ensureWindow(def) {
    let view = state.windows.get(def.name);
    if (view) {
      view.def = def;
      return view;
    }
    view = new WindowView(def);
    state.windows.set(def.name, view);
    const id = "window-" + def.name;
    const chartBox = el("div", { class: "chart" });
    const size = def.window ? describeWindow(def) : "";
    const tile = el(
      "article",
      { class: "tile", id: "tile-" + id, "data-window": def.name },
      el("h2", {}, def.name + " ", el("span", { class: "muted small", text: size })),
      el("div", { class: "muted small window-meta" }),
      def.window && def.window.kind === "session" ? null : chartBox,
      el("div", { class: "scroll" }, el("table", { class: "table", id, "data-window": def.name }, el("thead"), el("tbody")))
    );
    $("#windows").append(tile);
    view.tile = tile;
    view.chart = def.window && def.window.kind === "session" ? null : new Chart(chartBox, 30 * slotMs(def));
    subscribe("windows/" + def.name, (r) => {
      view.put(r, r.kind || "early");
      touch("windows", "strip");
    });
    return view;
  }
  // The distance between two window starts.
  function slotMs(def) {
    const w = def.window || {};
    return w.slide_ms || w.size_ms || 60000;
  }
  function describeWindow(def) {
    const w = def.window;
    const ms = (v) => (v >= 60000 ? v / 60000 + " min" : v / 1000 + " s");
    const by = def.group_by && def.group_by.length ? " by " + def.group_by.join(", ") : "";
    if (w.kind === "tumbling") return "tumbling " + ms(w.size_ms) + by;
    if (w.kind === "sliding") return "sliding " + ms(w.size_ms) + " every " + ms(w.slide_ms) + by;
    if (w.kind === "session") return "sessions" + by;
    return w.kind + by;
  }

  function renderWindows(withCharts) {
    for (const view of state.windows.values()) {
      const table = view.tile.querySelector("table[data-window]");
      const rows = view.latestRows();
      const dims = view.def.group_by || [];
      const valueNames = [];
      for (const r of rows) for (const k of Object.keys(r.values)) if (!valueNames.includes(k)) valueNames.push(k);
      const head = el("tr", {}, ...dims.map((d) => el("th", { text: d })), ...valueNames.map((v) => el("th", { text: v })), el("th", { text: "window" }), el("th", { text: "kind" }));
      table.tHead.replaceChildren(head);
      table.tBodies[0].replaceChildren(
        ...rows.map((r) =>
          el(
            "tr",
            { "data-group": groupLabel(r.group), "data-start": String(r.start), "data-kind": r.kind },
            ...dims.map((d) => el("td", { text: r.group[d] === undefined || r.group[d] === null ? "∅" : String(r.group[d]) })),
            ...valueNames.map((v) => el("td", { class: "num", "data-value": v, text: num(r.values[v]) })),
            el("td", { class: "muted", text: clock(r.start) + "–" + clock(r.end) }),
            el("td", {}, el("span", { class: "badge kind-" + r.kind, text: r.kind }))
          )
        )
      );
      const meta = view.tile.querySelector(".window-meta");
      const st = view.def.stats || {};
      const metaText = "watermark " + (view.def.watermark ? clock(view.def.watermark) : "–") + " · " + num(st.events) + " events · " + num(st.late_events) + " late" + (rows.length ? "" : " · no results yet");
      if (meta.textContent !== metaText) meta.textContent = metaText;
      if (withCharts && view.chart) {
        const { series, data } = view.chartData();
        view.chart.update(series, data);
      }
    }
    const epm = state.windows.get("events_per_minute");
    if (withCharts && epm) {
      if (!epmChart) epmChart = new Chart($("#epm-chart"), 30 * slotMs(epm.def));
      const { series, data } = epm.chartData();
      epmChart.update(series, data);
    }
    setText("#epm-note", epm ? "" : "(no events_per_minute window configured)");
  }
  let epmChart = null;

  function eventsLast30Min() {
    const epm = state.windows.get("events_per_minute");
    if (!epm) return null;
    const from = Date.now() - 30 * 60 * 1000;
    let total = 0;
    for (const [start, groups] of epm.byStart) {
      if (start + 60000 <= from) continue;
      for (const g of groups.values()) total += typeof g.values.count === "number" ? g.values.count : firstNumber(g.values);
    }
    return total;
  }

  // ----------------------------------------------------------- snapshots --
  async function loadWindows(initial) {
    await poll("/v1/windows", async (body) => {
      state.windowDefs = body.windows || [];
      for (const def of state.windowDefs) {
        const view = ensureWindow(def);
        if (initial) {
          const from = Date.now() - 60 * 60 * 1000;
          await poll("/v1/windows/" + encodeURIComponent(def.name) + "/history?from=" + from + "&limit=5000", (h) => {
            for (const r of h.results || []) view.put(r, r.kind === "correction" ? "correction" : "final");
          });
        }
      }
      touch("windows", "strip", "health");
    });
  }
  async function pollOpenWindows() {
    for (const def of state.windowDefs) {
      const view = state.windows.get(def.name);
      if (!view) continue;
      await poll("/v1/windows/" + encodeURIComponent(def.name) + "?limit=500", (body) => {
        for (const g of body.groups || []) view.put(g, "open");
      });
    }
    touch("windows", "strip");
  }
  async function loadPatterns(initial) {
    await poll("/v1/patterns", async (body) => {
      state.patterns = body.patterns || [];
      for (const p of state.patterns) {
        subscribe("patterns/" + p.name, (r) => addPatternResult(r));
        if (initial) {
          await poll("/v1/patterns/" + encodeURIComponent(p.name) + "/matches?limit=" + LIMITS.patterns, (m) => {
            for (const r of m.results || []) addPatternResult(r);
          });
        }
      }
      touch("patterns", "strip", "health");
    });
  }
  function addPatternResult(r) {
    const id = [r.pattern, r.kind, r.key, r.start, r.end].join("|");
    if (state.patternSeen.has(id)) return;
    state.patternSeen.add(id);
    state.patternFeed.push(r);
    state.patternFeed.sort((a, b) => (b.end || b.start || 0) - (a.end || a.start || 0));
    while (state.patternFeed.length > LIMITS.patterns) {
      const gone = state.patternFeed.pop();
      state.patternSeen.delete([gone.pattern, gone.kind, gone.key, gone.start, gone.end].join("|"));
    }
    touch("patterns");
  }
  async function loadAlerts() {
    await poll("/v1/alerts", (body) => {
      state.alertRules = body.rules || [];
      const firingNow = new Set();
      for (const a of body.alerts || []) {
        // A transition the WebSocket delivered after this snapshot was
        // taken is newer: keep it.
        const known = state.alerts.get(a.fingerprint);
        if (!known || (a.at || 0) >= (known.at || 0)) state.alerts.set(a.fingerprint, a);
        firingNow.add(a.fingerprint);
      }
      // What the server no longer lists resolved while we were away.
      for (const [fp, a] of state.alerts) if (!firingNow.has(fp) && a.state !== "resolved") state.alerts.delete(fp);
      touch("alerts");
    });
  }
  async function loadPlugins() {
    await poll("/v1/plugins", (body) => {
      state.plugins = body.plugins || [];
      touch("plugins", "strip");
    });
  }
  async function loadLive() {
    await poll("/v1/live/users?limit=15", (body) => {
      state.liveUsers = body;
      touch("live", "strip");
    });
    await poll("/v1/live/pages?limit=10", (body) => {
      state.livePages = body;
      touch("pages");
    });
  }
  async function loadRecentEvents() {
    // Subscribe first (from the head), then take the recent events over
    // REST and keep those the subscription did not deliver: every event is
    // in one or the other, so the feed has no gap, and a sequence number is
    // shown once.
    if (subs.has("events")) return;
    // The REST read waits for the subscription's acknowledgement: from
    // then on every new event comes over the WebSocket.
    subscribe("events", (e, seq) => addEvent({ ...e, seq }), {
      onSubscribed: () =>
        poll("/v1/events/recent?limit=50", (body) => {
          const shown = new Set(state.events.map((e) => e.seq));
          const older = (body.events || []).filter((e) => !shown.has(e.seq));
          state.events = state.events.concat(older).sort((a, b) => b.seq - a.seq).slice(0, LIMITS.events);
          touch("events", "tech");
        }),
    });
  }
  function addEvent(e) {
    state.events.unshift(e);
    if (state.events.length > LIMITS.events) state.events.length = LIMITS.events;
    if (state.eventsPaused) state.eventsWhilePaused += 1;
    touch("events", "tech");
  }

  let refreshing = false;
  async function refreshAll(initial) {
    if (refreshing) return;
    refreshing = true;
    try {
      subscribe("stats", (s) => {
        state.stats = s;
        touch("strip", "health");
      });
      subscribe("alerts", (a) => {
        state.alerts.set(a.fingerprint, a);
        touch("alerts");
      });
      subscribe("plugins", (n) => {
        state.pluginHistory.unshift({ at: Date.now(), ...n });
        if (state.pluginHistory.length > LIMITS.pluginHistory) state.pluginHistory.length = LIMITS.pluginHistory;
        touch("plugins");
        // A new version, or a pattern plugin's channel, may have appeared.
        loadPlugins();
        loadPatterns(false);
      });
      await loadRecentEvents();
      await Promise.all([loadWindows(initial), loadPatterns(initial), loadAlerts(), loadPlugins(), loadLive()]);
      await pollOpenWindows();
    } finally {
      refreshing = false;
    }
  }

  // ------------------------------------------------------------ render --
  function renderStrip() {
    const s = state.stats;
    setText("#stat-live-users", state.liveUsers ? num(state.liveUsers.count) : "–");
    setText("#stat-in", s ? rate(s.accepted_per_s) : "–");
    setText("#stat-out", s ? rate(s.published_per_s) : "–");
    const last30 = eventsLast30Min();
    setText("#stat-30m", last30 === null ? "–" : num(last30));
    let late = 0;
    for (const w of state.windowDefs) late += (w.stats && w.stats.late_events) || 0;
    for (const p of state.patterns) late += p.late || 0;
    setText("#stat-late", num(late));
    let failures = 0;
    for (const p of state.plugins) failures += p.errors || 0;
    setText("#stat-plugin-failures", num(failures));
  }
  function renderLive() {
    const body = state.liveUsers;
    if (!body) return;
    setText("#live-users-note", "(last " + Math.round(body.window_ms / 60000) + " min)");
    $("#live-users").replaceChildren(
      ...(body.users || []).map((u) =>
        el(
          "li",
          { "data-user": u.distinct_id },
          el("span", { class: "mono", text: u.distinct_id }),
          el("span", { class: "page", title: u.current_url || "", text: pathOf(u.current_url) }),
          el("span", { class: "muted small", text: ago(u.last_seen) })
        )
      )
    );
  }
  function pathOf(url) {
    if (!url) return "–";
    try {
      return new URL(url).pathname;
    } catch (_) {
      return url;
    }
  }
  function renderPages() {
    const body = state.livePages;
    if (!body) return;
    setText("#top-pages-note", "(last " + Math.round(body.window_ms / 60000) + " min, " + num(body.views) + " views)");
    const list = $("#top-pages");
    const pages = body.pages || [];
    const max = Math.max(1, ...pages.map((p) => p.views));
    // Keep rows by URL so the bars animate from their old width.
    const existing = new Map([...list.children].map((li) => [li.dataset.url, li]));
    const rows = pages.map((p) => {
      let li = existing.get(p.url);
      if (!li) {
        li = el("li", { "data-url": p.url }, el("div", { class: "fill", style: "width:0%" }), el("span", { class: "url" }), el("span", { class: "views" }));
      }
      li.dataset.views = String(p.views);
      li.querySelector(".url").textContent = pathOf(p.url);
      li.querySelector(".url").title = p.url;
      li.querySelector(".views").textContent = num(p.views);
      requestAnimationFrame(() => {
        li.querySelector(".fill").style.width = ((100 * p.views) / max).toFixed(1) + "%";
      });
      return li;
    });
    list.replaceChildren(...rows);
  }
  function renderTech() {
    const dims = [["$browser", "Browsers"], ["$os", "OS"], ["$device_type", "Devices"]];
    const box = $("#tech");
    box.replaceChildren(
      ...dims.map(([prop, title]) => {
        const counts = new Map();
        for (const e of state.events) {
          const v = e.properties && e.properties[prop];
          if (v !== undefined && v !== null) counts.set(String(v), (counts.get(String(v)) || 0) + 1);
        }
        const top = [...counts.entries()].sort((a, b) => b[1] - a[1]).slice(0, 6);
        return el(
          "div",
          { "data-dim": prop },
          el("h3", { text: title }),
          top.length ? el("ul", { class: "list" }, ...top.map(([k, n]) => el("li", { "data-name": k }, el("span", { text: k }), el("span", { class: "muted", text: num(n) })))) : el("p", { class: "muted small", text: "none yet" })
        );
      })
    );
  }
  function renderAlerts() {
    const list = [...state.alerts.values()].sort((a, b) => {
      const order = { firing: 0, pending: 1, nodata: 2, resolved: 3 };
      return (order[a.state] ?? 4) - (order[b.state] ?? 4) || (b.at || 0) - (a.at || 0);
    });
    // Keep resolved alerts for ten minutes, then let them go.
    const cutoff = Date.now() - 10 * 60 * 1000;
    const shown = list.filter((a) => a.state !== "resolved" || (a.at || 0) > cutoff).slice(0, 50);
    $("#alerts").tBodies[0].replaceChildren(
      ...shown.map((a) => {
        const labels = Object.entries(a.labels || {}).filter(([k]) => k !== "alertname" && k !== "severity");
        const since = a.activeAt ? Date.parse(a.activeAt) : a.at;
        return el(
          "tr",
          { "data-alertname": a.alertname, "data-state": a.state, "data-fingerprint": a.fingerprint, title: (a.annotations && a.annotations.summary) || "" },
          el("td", {}, el("span", { class: "badge state-" + a.state, text: a.state })),
          el("td", { text: a.alertname }),
          el("td", { text: (a.labels && a.labels.severity) || "–" }),
          el("td", { class: "mono", text: labels.map(([k, v]) => k + "=" + v).join(" ") }),
          el("td", { class: "num", text: num(a.value) }),
          el("td", { class: "muted", text: a.state === "resolved" ? "resolved " + ago(a.at) : ago(since) })
        );
      })
    );
    $("#alerts-empty").hidden = shown.some((a) => a.state === "firing" || a.state === "pending");
  }
  function renderPatterns() {
    $("#pattern-counters").replaceChildren(
      ...state.patterns.map((p) =>
        el("span", { "data-pattern": p.name, title: p.source }, p.name + ": " + num(p.matches) + " matches · " + num(p.timeouts) + " timeouts · " + num(p.partial_matches) + " partial")
      )
    );
    const openIds = new Set([...document.querySelectorAll("#patterns-feed details[open]")].map((d) => d.dataset.id));
    $("#patterns-feed").replaceChildren(
      ...state.patternFeed.map((r) => {
        const id = [r.pattern, r.kind, r.key, r.start, r.end].join("|");
        const steps = Object.entries(r.steps || {}).map(([name, evs]) => name + "×" + (Array.isArray(evs) ? evs.length : 0)).join(" → ");
        const details = el(
          "details",
          { "data-id": id },
          el("summary", {}, el("span", { class: "badge " + (r.kind === "match" ? "kind-final" : "kind-correction"), text: r.kind }), " ", el("strong", { text: r.pattern }), " ", el("span", { class: "mono", text: String(r.key) }), " ", el("span", { class: "muted small", text: clock(r.end || r.start) + (steps ? " · " + steps : "") })),
          el("pre", { text: JSON.stringify(r.steps || {}, null, 2) })
        );
        if (openIds.has(id)) details.open = true;
        return el("li", { "data-pattern": r.pattern, "data-kind": r.kind, "data-key": String(r.key) }, details);
      })
    );
  }
  function renderPlugins() {
    $("#plugins").tBodies[0].replaceChildren(
      ...state.plugins.map((p) =>
        el(
          "tr",
          { "data-plugin": p.name, "data-hash": p.hash, "data-status": p.status, title: p.description || "" },
          el("td", { text: p.name }),
          el("td", { class: "muted", text: p.kind }),
          el("td", { class: "mono", text: (p.version || "?") + " " + String(p.hash || "").slice(0, 12) }),
          el("td", {}, el("span", { class: "badge status-" + p.status, text: p.status })),
          el("td", { class: "num", text: num(p.calls) }),
          el("td", { class: "num", text: num(p.errors) }),
          el("td", { class: "num", text: num(Math.round(p.mean_ns_per_event || 0)) })
        )
      )
    );
    $("#plugin-history").replaceChildren(
      ...state.pluginHistory.map((n) =>
        el(
          "li",
          { "data-plugin": n.plugin, "data-kind": n.kind },
          el("span", { class: "muted small", text: clock(n.at) + " " }),
          el("strong", { text: n.plugin }),
          " ",
          el("span", { class: "badge kind-" + (n.kind === "swapped" || n.kind === "loaded" || n.kind === "recovered" ? "final" : "correction"), text: n.kind }),
          " ",
          el("span", { class: "mono small", text: [n.version, n.hash].filter(Boolean).join(" ") }),
          n.detail ? el("span", { class: "muted small", text: " " + n.detail }) : null
        )
      )
    );
  }
  function renderEvents() {
    if (state.eventsPaused) {
      setText("#event-filter-note", "paused · " + state.eventsWhilePaused + " new");
      return;
    }
    $("#events").tBodies[0].replaceChildren(
      ...state.events.slice(0, 60).map((e) =>
        el(
          "tr",
          { "data-seq": String(e.seq || ""), "data-id": e.id || "", "data-name": e.name, onclick: () => showEvent(e) },
          el("td", { class: "muted", text: e.timestamp ? clock(e.timestamp) : "–" }),
          el("td", { text: e.name }),
          el("td", { class: "mono", text: e.distinct_id || "–" }),
          el("td", { text: e.properties ? pathOf(e.properties.$current_url) : "–" }),
          el("td", { text: (e.properties && e.properties.$browser) || "–" })
        )
      )
    );
  }
  function showEvent(e) {
    const pre = $("#event-json");
    if (state.selectedEvent === e) {
      state.selectedEvent = null;
      pre.hidden = true;
      return;
    }
    state.selectedEvent = e;
    pre.textContent = JSON.stringify(e, null, 2);
    pre.hidden = false;
  }
  function renderHealth() {
    const s = state.stats;
    if (!s) return;
    const rows = [
      ["queue", num(s.queue_depth) + " / " + num(s.queue_capacity) + " events"],
      ["refused (429)", num(s.refused) + " events in " + num(s.refused_requests) + " requests"],
      ["invalid", num(s.invalid)],
      ["dead-lettered", num(s.dead_lettered)],
      ["dropped by stages", num(s.dropped)],
      ["duplicates", num(s.duplicates)],
      ["stream connections", num(s.stream_connections)],
      ["uptime", num(s.uptime_s) + " s"],
    ];
    const w = s.wal || {};
    if (w.enabled) {
      rows.push(["WAL", "fsync " + w.fsync + " · " + num(w.bytes) + " bytes in " + num(w.segments) + " segments"]);
      rows.push(["WAL sync p99", w.sync_latency_us ? num(w.sync_latency_us.p99) + " µs" : "–"]);
      rows.push(["WAL errors", num((w.sync_errors || 0) + (w.write_errors || 0))]);
      const c = w.last_checkpoint;
      rows.push(["last checkpoint", c ? ago(c.at_ms) + " · " + num(c.bytes) + " bytes · " + num(c.duration_ms) + " ms" : "none yet"]);
      rows.push(["checkpoint errors", num(w.checkpoint_errors)]);
    } else {
      rows.push(["WAL", "off"]);
    }
    $("#health").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { "data-health": k, text: v })]));
  }

  let tick = 0;
  function flush() {
    tick += 1;
    const charts = tick % 2 === 0;
    if (dirty.has("strip")) renderStrip();
    if (dirty.has("live")) renderLive();
    if (dirty.has("pages")) renderPages();
    if (dirty.has("tech")) renderTech();
    if (dirty.has("alerts")) renderAlerts();
    if (dirty.has("patterns")) renderPatterns();
    if (dirty.has("plugins")) renderPlugins();
    if (dirty.has("events")) renderEvents();
    if (dirty.has("health")) renderHealth();
    // Tables repaint at 2 Hz, charts at 1 Hz: a window change seen on a
    // tick without charts stays dirty for the next.
    const windowsLeft = dirty.has("windows") && !charts;
    if (dirty.has("windows")) renderWindows(charts);
    dirty.clear();
    if (windowsLeft) dirty.add("windows");
  }

  // ------------------------------------------------------------ controls --
  // "$pageview distinct_id=u1 properties.$browser=Chrome properties.load_ms:gt:1000"
  // → {names: ["$pageview"], where: [...]} (the WebSocket filter).
  const OPS = ["equals", "not_equals", "contains", "gt", "gte", "lt", "lte", "in", "is_set", "is_not_set"];
  function parseValue(text) {
    try {
      return JSON.parse(text);
    } catch (_) {
      return text;
    }
  }
  function parseFilter(text) {
    const names = [];
    const where = [];
    for (const token of text.trim().split(/\s+/).filter(Boolean)) {
      const parts = token.split(":");
      if (parts.length >= 2 && OPS.includes(parts[1])) {
        const field = parts[0];
        const op = parts[1];
        const raw = parts.slice(2).join(":");
        if (op === "is_set" || op === "is_not_set") where.push({ field, op });
        else if (op === "in") where.push({ field, op, value: raw.startsWith("[") ? parseValue(raw) : raw.split(",").map(parseValue) });
        else where.push({ field, op, value: parseValue(raw) });
      } else if (token.includes("=")) {
        const i = token.indexOf("=");
        const field = token.slice(0, i);
        const value = token.slice(i + 1);
        if (field === "name") names.push(value);
        else where.push({ field, op: "equals", value: field === "distinct_id" || field === "session_id" ? value : parseValue(value) });
      } else {
        names.push(token);
      }
    }
    if (!names.length && !where.length) return null;
    const f = {};
    if (names.length) f.names = names;
    if (where.length) f.where = where;
    return f;
  }

  function setupControls() {
    $("#event-filter").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const text = $("#event-filter-input").value;
      state.eventFilter = parseFilter(text);
      state.events = [];
      setText("#event-filter-note", state.eventFilter ? "filter: " + JSON.stringify(state.eventFilter) : "");
      resubscribe("events", state.eventFilter);
      touch("events", "tech");
    });
    $("#event-pause").addEventListener("click", () => {
      state.eventsPaused = !state.eventsPaused;
      state.eventsWhilePaused = 0;
      $("#event-pause").setAttribute("aria-pressed", String(state.eventsPaused));
      $("#event-pause").textContent = state.eventsPaused ? "Resume" : "Pause";
      if (!state.eventsPaused) setText("#event-filter-note", state.eventFilter ? "filter: " + JSON.stringify(state.eventFilter) : "");
      touch("events");
    });
    $("#theme-toggle").addEventListener("click", () => {
      const now = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
      applyTheme(now);
      localStorage.setItem("eddy.theme", now);
    });
    $("#key-button").addEventListener("click", () => {
      $("#key-form").hidden = !$("#key-form").hidden;
    });
    $("#key-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      state.key = $("#key-input").value.trim();
      if (state.key) localStorage.setItem("eddy.key", state.key);
      $("#key-form").hidden = true;
      start();
    });
    $("#key-clear").addEventListener("click", () => {
      state.key = "";
      localStorage.removeItem("eddy.key");
      $("#key-input").value = "";
      setText("#key-message", "key forgotten");
    });
  }
  function applyTheme(theme) {
    document.documentElement.dataset.theme = theme;
    touch("windows");
  }
  function askKey(message) {
    $("#key-form").hidden = false;
    setText("#key-message", message);
    setConn("down", "needs a read key");
  }

  // --------------------------------------------------------------- start --
  let started = false;
  async function start() {
    // Ask once over REST whether this browser may read; a WebSocket refused
    // for its key cannot say why.
    try {
      await api("/v1/channels");
    } catch (e) {
      if (e instanceof AuthNeeded) {
        askKey(e.message);
        return;
      }
      // Not reachable yet: the WebSocket's reconnect loop takes over.
    }
    if (ws) {
      ws.onclose = null;
      ws.close();
      ws = null;
      state.connected = false;
    }
    if (!started) {
      started = true;
      setInterval(flush, 500);
      // Aggregates the page polls: live views and open windows every second
      // (what posted events change first), plugin counters every two.
      setInterval(() => {
        pollOpenWindows();
        loadLive();
      }, 1000);
      setInterval(() => loadPlugins(), 2000);
      setInterval(() => {
        loadWindows(false);
        loadPatterns(false);
        loadAlerts();
      }, 5000);
      setInterval(() => touch("alerts", "live"), 10000); // "… ago" texts
    }
    connect();
  }

  applyTheme(localStorage.getItem("eddy.theme") || (window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light"));
  setupControls();
  if (window.EDDY_NO_CHARTS) notice(window.EDDY_NO_CHARTS);
  start();
})();
