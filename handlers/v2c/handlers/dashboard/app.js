/* v2c fleet dashboard: vanilla JS, no build step, no dependency.
 *
 * Why it is written this way:
 * - every number comes from the fleet-manager API with the credential the user
 *   typed (sessionStorage, this tab only): an API key, sent as X-API-Key, or a
 *   bearer token (on AWS, a Cognito ID token), sent as `Authorization: Bearer`;
 *   the page itself holds no data;
 * - nothing from the API ever becomes markup: elements are made with
 *   createElement and filled with textContent, so a vehicle-supplied string
 *   stays text (the server's CSP, default-src 'self', is the second fence);
 * - live by polling (every 2 s, `?poll_ms=` for tests), which works behind API
 *   Gateway where server-sent events do not; a view re-renders its sections
 *   in place, never reloads, and never asks for more than a page of vehicles;
 * - only cheap reads ride the poll: a read that costs the API a pass over many
 *   items (failures by reason of a campaign from before the campaign counted
 *   them, its timeline, the fleet's version counts) runs at most every 10 or
 *   30 s whatever `?poll_ms=` says, and at once from its panel's "refresh"; the dead-letter page never polls, since listing
 *   an SQS queue hides every message it receives for up to 30 s (a replay
 *   running meanwhile would miss them): it loads when opened, after a replay
 *   and from its Refresh button;
 * - ids from the URL fragment reach API paths only when they are ids (a VIN,
 *   a 32-hex campaign id): `#/vehicles/..` is "not found", not a request;
 * - an endpoint that fails (a 404 from an API without it, a 403, a network
 *   error) fails its own section, visibly, with the API's `detail`.
 */
"use strict";
(() => {
  const KEY = "v2c.apiKey"; // the credential, key or token
  const KIND = "v2c.credentialKind"; // "key" (X-API-Key) or "token" (Authorization: Bearer)
  const params = new URLSearchParams(location.search);
  const POLL_MS = Math.max(100, Number(params.get("poll_ms")) || 2000);
  const PAGE = 50;
  // Not scaled by ?poll_ms=: these reads cost the API a pass over many items.
  // Failures by reason come with the campaign (counted with its counters: free on every
  // poll); a campaign created before they were counted answers null, and only then are
  // they the statistics' pass over every update record of the campaign:
  const STATS_MS = 30000;
  // Above this many targets that pass costs seconds of API CPU and ~90 RCUs per 1,000
  // records (`v2c bench dashboard`: 1.7 s and ~900 RCUs at 10,000): read once, then on demand.
  const STATS_AUTO_MAX = 2000;
  const TIMELINE_MS = 10000; // the campaign's events
  const VERSIONS_MS = 30000; // the fleet index's version counts
  const DLQ_LIMIT = 50; // records a dead-letter listing asks for
  const VIN = /^VIN-[A-HJ-NPR-Z0-9]{17}$/; // v2c.contract.topics.VIN_PATTERN
  const CAMPAIGN_ID = /^[0-9a-f]{32}$/; // uuid4().hex
  const COUNTERS = ["pending", "waiting", "in_progress", "completed", "failed", "timed_out",
    "rolled_back", "cancelled"];
  const UPDATE_STATES = ["pending", "notified", "accepted", "rejected", "deferred", "downloading",
    "paused", "downloaded", "installing", "rebooting", "verifying", "completed", "failed",
    "rolled_back", "cancelled", "timed_out", "waiting"];
  const QUEUES = ["telemetry", "ota", "ingest"];
  const NOT_CHARTED = new Set(["timestamp_ms", "sequence", "epoch", "received_at_ms",
    "clock_skew_ms", "diagnostic_flags"]);
  const byId = (testid) => document.querySelector(`[data-testid="${testid}"]`);

  // -- elements ---------------------------------------------------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "text") node.textContent = String(value);
      else if (name === "testid") node.dataset.testid = value;
      else if (name === "class") node.className = value;
      else if (name === "on") for (const [type, fn] of Object.entries(value)) node.addEventListener(type, fn);
      else if (name === "hidden" || name === "disabled" || name === "selected") node[name] = true;
      else node.setAttribute(name, String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    return node;
  }

  /** Put `nodes` in `target` unless it shows the same already: a poll that brings
   * nothing new leaves the page alone (a selection, a hovered button stay). */
  function refill(target, ...nodes) {
    const fresh = nodes.flat().filter(Boolean);
    const old = target.childNodes;
    if (old.length === fresh.length && fresh.every((node, i) => node.isEqualNode(old[i]))) return;
    target.replaceChildren(...fresh);
  }

  const link = (hash, text, testid) => el("a", { href: hash, text, testid });
  const campaignHref = (id) => `#/campaigns/${encodeURIComponent(id)}`;
  const vehicleHref = (id) => `#/vehicles/${encodeURIComponent(id)}`;
  const num = (value) => (value === null || value === undefined ? "–" : String(value));
  const pct = (value) => (value === null || value === undefined ? "–" : `${Number(value).toFixed(1)} %`);
  function when(value) {
    if (value === null || value === undefined || value === 0 || value === "") return "–";
    const date = typeof value === "number" ? new Date(value) : new Date(String(value));
    return Number.isNaN(date.getTime()) ? String(value) : date.toISOString().replace("T", " ").slice(0, 19) + "Z";
  }

  function table(columns, rows, testid) {
    const head = el("tr", {}, columns.map((c) => el("th", { text: c.label, class: c.num ? "num" : "" })));
    const body = el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: columns.length, class: "muted", text: "none" })));
    return el("table", { testid }, el("thead", {}, head), body);
  }

  function cells(columns, item) {
    return columns.map((c) => {
      const value = c.get(item);
      const cell = el("td", { testid: c.id, class: c.num ? "num" : "" });
      cell.append(value instanceof Node ? value : document.createTextNode(num(value)));
      return cell;
    });
  }

  function bar(counters) {
    const total = counters.total || 0;
    const node = el("div", { class: "bar", title: `${counters.completed || 0} of ${total} completed` });
    for (const name of COUNTERS) {
      const share = total ? (counters[name] || 0) / total : 0;
      if (share <= 0) continue;
      const part = el("span", { class: `s-${name}` });
      part.style.width = `${(share * 100).toFixed(2)}%`;
      node.append(part);
    }
    return node;
  }

  function facts(pairs, testid) {
    return el("dl", { class: "facts", testid }, pairs.flatMap(([label, value, id]) => [
      el("dt", { text: label }),
      value instanceof Node ? el("dd", { testid: id }, value) : el("dd", { testid: id, text: num(value) }),
    ]));
  }

  // -- the API ------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, detail, reason) {
      super(detail);
      this.status = status;
      this.detail = detail;
      this.reason = reason;
    }
  }

  let credential = sessionStorage.getItem(KEY);
  let kind = sessionStorage.getItem(KIND) === "token" ? "token" : "key";
  let me = null;

  function credentialHeaders() {
    if (kind === "token") return { Authorization: `Bearer ${credential || ""}` };
    return { "X-API-Key": credential || "" };
  }

  async function api(path, options) {
    const opts = options || {};
    const headers = { Accept: "application/json", ...credentialHeaders() };
    let body;
    if (opts.body !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(opts.body);
    }
    let response;
    try {
      response = await fetch(path, { method: opts.method || "GET", headers, body, cache: "no-store", credentials: "omit" });
    } catch (error) {
      throw new ApiError(0, `the API did not answer (${error.message})`, "network");
    }
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (!response.ok) {
      const detail = data && typeof data.detail === "string" ? data.detail : response.statusText || "error";
      const error = new ApiError(response.status, detail, data && data.reason ? String(data.reason) : "");
      if (response.status === 401) signOut(`${detail} (401)`);
      throw error;
    }
    return data;
  }

  function describe(error) {
    if (!(error instanceof ApiError)) return `error: ${error && error.message}`;
    if (error.status === 404) return `not available (404 ${error.reason || "not_found"}): ${error.detail}`;
    if (error.status === 0) return error.detail;
    return `${error.status} ${error.reason}: ${error.detail}`;
  }

  function showError(text) {
    const line = byId("error");
    line.textContent = text;
    line.hidden = !text;
  }

  const allowed = (permission) => Boolean(me && me.permissions && me.permissions[permission]);

  // -- polling: one view at a time, its refresh every POLL_MS (unless `manual`) -----

  let current = null;
  let timer = null;
  let polls = 0;

  function mount(factory, ...args) {
    clearTimeout(timer);
    timer = null;
    const main = byId("view");
    main.replaceChildren();
    showError("");
    const token = { running: false, again: false };
    current = token;
    token.view = factory(main, ...args);
    kick();
  }

  async function kick() {
    const token = current;
    if (!token) return;
    if (token.running) { token.again = true; return; }
    clearTimeout(timer);
    timer = null;
    token.running = true;
    try { await token.view.refresh(); } catch (error) { showError(describe(error)); }
    token.running = false;
    if (token !== current) return;
    polls += 1;
    document.body.dataset.polls = String(polls);
    const manual = Boolean(token.view.manual);
    byId("updated").textContent = `updated ${when(Date.now())}, ${manual ? "by hand (Refresh)" : `every ${POLL_MS / 1000} s`}`;
    if (token.again) { token.again = false; kick(); return; }
    if (!manual) timer = setTimeout(kick, POLL_MS);
  }

  /** A read too costly for every poll: due at most every `ms` (whatever
   * `?poll_ms=` says), and at once after its "refresh" (`<testid>-refresh`). */
  function throttled(ms, testid) {
    let last = -Infinity;
    const asOf = el("span", { testid: `${testid}-as-of`, text: "not read yet" });
    const control = el("p", { class: "muted refresh" }, asOf, " ",
      el("button", { type: "button", class: "link", text: "refresh", testid: `${testid}-refresh`,
        on: { click: () => { last = -Infinity; kick(); } } }));
    return {
      control,
      /** Say where the panel's data came from instead (read another, free way). */
      note(text) { asOf.textContent = text; },
      /** Whether the read is due now; if so, it counts as done from now. Without
       * `auto` only the first read and a click on "refresh" are due. */
      take(auto = true) {
        const now = Date.now();
        const first = last === -Infinity;
        if (!first && (!auto || now - last < ms)) return false;
        last = now;
        asOf.textContent = auto
          ? `read ${when(now).slice(11)}, every ${ms / 1000} s at most`
          : `read ${when(now).slice(11)}; a large campaign: on demand only`;
        return true;
      },
    };
  }

  /** A titled section that fails alone: its error line shows what the API said. */
  function panel(parent, title, testid, ...above) {
    const error = el("p", { class: "error", testid: `${testid}-error`, hidden: true });
    const body = el("div", { testid: `${testid}-body` });
    const section = el("section", { testid }, title ? el("h3", { text: title }) : null, above, error, body);
    parent.append(section);
    return {
      section, body,
      async run(load) {
        try {
          await load(body);
          error.hidden = true;
        } catch (failure) {
          error.textContent = describe(failure);
          error.hidden = false;
        }
      },
    };
  }

  /** Cursor paging: `next` from the last answer, the cursors behind for "previous". */
  function pager(testid) {
    const state = { cursor: null, back: [] };
    state.reset = () => { state.cursor = null; state.back = []; };
    state.render = (next) => el("div", { class: "pager", testid },
      el("button", { type: "button", text: "previous", testid: `${testid}-prev`, disabled: !state.back.length,
        on: { click: () => { state.cursor = state.back.pop() || null; kick(); } } }),
      el("button", { type: "button", text: "next", testid: `${testid}-next`, disabled: !next, "data-cursor": next || "",
        on: { click: () => { state.back.push(state.cursor); state.cursor = next; kick(); } } }));
    return state;
  }

  // -- campaigns ----------------------------------------------------------------------

  function thresholds(campaign) {
    const spec = campaign.spec || {};
    return {
      success: spec.success_threshold_percent ?? 95,
      pause: spec.pause_threshold_percent ?? 5,
      failure: spec.failure_threshold_percent ?? 20,
    };
  }

  function rolledBackRate(counters) {
    const finished = (counters.completed || 0) + (counters.failed || 0) + (counters.rolled_back || 0) + (counters.timed_out || 0);
    return finished ? (counters.rolled_back || 0) * 100 / finished : null;
  }

  function rateAgainst(value, limit, higherIsBetter, testid) {
    const ok = value === null || value === undefined || (higherIsBetter ? value >= limit : value <= limit);
    return el("span", { testid, class: value === null || value === undefined ? "muted" : ok ? "ok" : "bad" },
      `${pct(value)} (${higherIsBetter ? "≥" : "≤"} ${limit} %)`);
  }

  function gateText(gate) {
    if (!gate) return "no gate decided yet";
    return `${gate.wave || "wave"}: ${gate.verdict}${gate.reason ? ` (${gate.reason})` : ""}`;
  }

  function gateCell(campaign) {
    const gate = campaign.gate;
    if (!gate) return el("span", { class: "muted", text: "–" });
    const why = [gate.reason, campaign.status_reason].filter(Boolean).join("; ");
    return el("span", {}, `${gate.wave || "wave"}: ${gate.verdict}`, why ? el("span", { class: "why", text: why }) : null);
  }

  function campaignsView(main) {
    main.append(el("h2", { text: "Campaigns" }));
    const status = el("select", { testid: "campaigns-status", on: { change: () => { paging.reset(); kick(); } } },
      el("option", { value: "", text: "any status" }),
      ["planning", "created", "in_progress", "paused", "completed", "cancelled", "rolling_back",
        "rolled_back", "planning_failed", "rejected"].map((s) => el("option", { value: s, text: s })));
    main.append(el("form", {}, el("label", {}, "status ", status)));
    const list = panel(main, "", "campaigns");
    const paging = pager("campaigns-pager");
    const columns = [
      { label: "campaign", id: "campaign-name", get: (c) => link(campaignHref(c.campaign_id), c.name) },
      { label: "status", id: "campaign-status", get: (c) => c.status },
      { label: "strategy", id: "campaign-strategy", get: (c) => c.strategy },
      { label: "model / version", id: "campaign-version", get: (c) => `${c.device_model} → ${c.version}` },
      { label: "progress", id: "campaign-progress", get: (c) => bar(c.counters) },
      ...["total", ...COUNTERS].map((name) => ({ label: name.replace("_", " "), id: `campaign-${name}`, num: true, get: (c) => c.counters[name] })),
      { label: "success", id: "campaign-success", get: (c) => rateAgainst(c.counters.success_rate, thresholds(c).success, true) },
      { label: "rolled back", id: "campaign-rollback-rate", get: (c) => rateAgainst(rolledBackRate(c.counters), thresholds(c).failure, false) },
      { label: "gate", id: "campaign-gate", get: (c) => gateCell(c) },
    ];
    return {
      async refresh() {
        await list.run(async (body) => {
          const query = new URLSearchParams({ limit: String(PAGE) });
          if (status.value) query.set("status", status.value);
          if (paging.cursor) query.set("cursor", paging.cursor);
          const page = await api(`api/v1/ota/campaigns?${query}`);
          const rows = page.items.map((c) => el("tr", { testid: `campaign-row-${c.campaign_id}` }, cells(columns, c)));
          refill(body, table(columns, rows, "campaigns-table"), paging.render(page.next_cursor));
        });
      },
    };
  }

  function actionsFor(campaign) {
    const s = campaign.status;
    const awaiting = campaign.requires_approval && !campaign.approved_by;
    const open = ["planning", "created", "in_progress", "paused"].includes(s);
    const wanted = {
      start: (s === "planning" || s === "created") && !awaiting && !campaign.start_requested_at,
      pause: s === "in_progress",
      resume: s === "paused",
      cancel: open,
      approve: (s === "planning" || s === "created") && awaiting,
      reject: s === "created" && awaiting,
      rollback: ["in_progress", "paused", "completed"].includes(s),
    };
    return Object.keys(wanted).filter((name) => wanted[name] && allowed(`campaign.${name}`));
  }

  async function act(campaignId, name, text) {
    let body;
    if (name === "reject" || name === "rollback") body = { reason: text || `${name} from the dashboard` };
    else if (name === "approve" && text) body = { comment: text };
    const result = byId("action-result");
    try {
      const campaign = await api(`api/v1/ota/campaigns/${encodeURIComponent(campaignId)}/${name}`, { method: "POST", body });
      showError("");
      if (result) result.textContent = `${name} accepted at ${new Date().toISOString().slice(11, 19)}Z: the campaign was then ${campaign.status}`;
    } catch (error) {
      showError(`${name} refused: ${describe(error)}`);
      if (result) result.textContent = "";
    }
    kick();
  }

  function campaignView(main, id) {
    const title = el("h2", { testid: "campaign-title", text: id });
    main.append(el("p", {}, link("#/campaigns", "← all campaigns", "back")), title);
    const head = panel(main, "Campaign", "campaign");
    const actions = panel(main, "Actions", "actions");
    const waves = panel(main, "Waves", "waves");
    const cols = el("div", { class: "cols" });
    const statsDue = throttled(STATS_MS, "failures");
    const timelineDue = throttled(TIMELINE_MS, "timeline");
    const failures = panel(cols, "Failures by reason", "failures", statsDue.control);
    const timeline = panel(cols, "Timeline", "timeline", timelineDue.control);
    const paging = pager("updates-pager");
    const waveFilter = el("select", { testid: "updates-wave", on: { change: () => { paging.reset(); kick(); } } }, el("option", { value: "", text: "every wave" }));
    const stateFilter = el("select", { testid: "updates-state", on: { change: () => { paging.reset(); kick(); } } },
      el("option", { value: "", text: "any state" }), UPDATE_STATES.map((s) => el("option", { value: s, text: s })));
    const updates = panel(main, "Vehicles (one page at a time)", "updates",
      el("form", {}, el("label", {}, "wave ", waveFilter), el("label", {}, "state ", stateFilter)));
    main.append(cols);
    const reason = el("input", { type: "text", testid: "action-reason", placeholder: "reason or comment", maxlength: 500 });
    const result = el("span", { testid: "action-result", class: "muted" });
    let shownActions = null;
    let waveNames = [];

    function renderHead(c, body) {
      title.textContent = c.name;
      const t = thresholds(c);
      refill(body, facts([
        ["status", el("span", { class: "status", text: c.status }), "campaign-status"],
        ["why", c.status_reason || "–", "campaign-status-reason"],
        ["strategy", c.strategy, "campaign-strategy"],
        ["firmware", `${c.device_model} → ${c.version}`, "campaign-version"],
        ["created", `${when(c.created_at)} by ${c.created_by}`, "campaign-created"],
        ["approval", c.requires_approval ? (c.approved_by ? `approved by ${c.approved_by} ${when(c.approved_at)}` : c.rejected_by ? `rejected by ${c.rejected_by}` : "awaiting approval") : "not required", "campaign-approval"],
        ["progress", el("span", {}, bar(c.counters), ` ${pct(c.counters.progress_percent)} ended`), "campaign-progress"],
        ["success rate", rateAgainst(c.counters.success_rate, t.success, true, "campaign-success-rate"), null],
        ["failure rate", el("span", {}, rateAgainst(c.counters.failure_rate, t.pause, false, "campaign-failure-rate"), ` pauses above ${t.pause} %, rolls back above ${t.failure} %`), null],
        ["rolled back", rateAgainst(rolledBackRate(c.counters), t.failure, false, "campaign-rollback-rate"), null],
        ["gate", el("span", { testid: "campaign-gate" }, gateText(c.gate), c.gate && c.gate.decided_at ? ` at ${when(c.gate.decided_at)}` : ""), null],
      ], "campaign-facts"),
      el("table", { testid: "campaign-counters" },
        el("thead", {}, el("tr", {}, ["total", ...COUNTERS].map((n) => el("th", { class: "num", text: n.replace("_", " ") })))),
        el("tbody", {}, el("tr", {}, ["total", ...COUNTERS].map((n) => el("td", { class: "num", testid: `counter-${n}`, text: num(c.counters[n]) }))))));
    }

    function renderActions(c, body) {
      const names = actionsFor(c);
      const key = names.join(",");
      if (key === shownActions) return;
      shownActions = key;
      const buttons = names.map((name) => el("button", { type: "button", testid: `action-${name}`, text: name,
        on: { click: () => act(id, name, reason.value.trim()) } }));
      refill(body, buttons.length
        ? el("div", { class: "actions" }, buttons, reason, result)
        : el("p", { class: "muted", testid: "actions-none", text: "no action your role allows in this state" }, result));
    }

    function renderWaves(c, body) {
      const names = c.waves.map((w) => w.name);
      if (names.join("\n") !== waveNames.join("\n")) {
        waveNames = names;
        const chosen = waveFilter.value;
        waveFilter.replaceChildren(el("option", { value: "", text: "every wave" }),
          names.map((n) => el("option", { value: n, text: n, selected: n === chosen })));
      }
      const columns = [
        { label: "wave", id: "wave-name", get: (w) => w.name },
        { label: "size", id: "wave-size", num: true, get: (w) => w.size },
        { label: "gated", id: "wave-gated", get: (w) => (w.gated ? "yes" : "no") },
        { label: "progress", id: "wave-progress", get: (w) => bar(w.counters) },
        ...COUNTERS.map((n) => ({ label: n.replace("_", " "), id: `wave-${n}`, num: true, get: (w) => w.counters[n] })),
      ];
      const rows = c.waves.map((w, i) => el("tr", { testid: `wave-row-${i}`, class: i === c.current_wave ? "current" : "" }, cells(columns, w)));
      refill(body, table(columns, rows, "waves-table"));
    }

    async function loadUpdates(body) {
      const query = new URLSearchParams({ limit: String(PAGE) });
      if (waveFilter.value) query.set("wave", waveFilter.value);
      if (stateFilter.value) query.set("state", stateFilter.value);
      if (paging.cursor) query.set("cursor", paging.cursor);
      const page = await api(`api/v1/ota/campaigns/${encodeURIComponent(id)}/updates?${query}`);
      const columns = [
        { label: "vehicle", id: "update-vehicle", get: (u) => link(vehicleHref(u.vehicle_id), u.vehicle_id) },
        { label: "wave", id: "update-wave", get: (u) => u.wave_name || (typeof u.wave === "number" && waveNames[u.wave]) || u.wave },
        { label: "state", id: "update-state", get: (u) => u.state },
        { label: "reason", id: "update-reason", get: (u) => u.reason || "" },
        { label: "notified", id: "update-notified", get: (u) => when(u.notified_at_ms) },
        { label: "ended", id: "update-completed", get: (u) => when(u.completed_at_ms) },
      ];
      const rows = page.items.slice(0, PAGE).map((u) => el("tr", { testid: `update-row-${u.vehicle_id}` }, cells(columns, u)));
      refill(body, table(columns, rows, "updates-table"), paging.render(page.next_cursor));
    }

    function failuresTable(reasons) {
      const columns = [
        { label: "reason", id: "failure-reason", get: (r) => r[0] },
        { label: "vehicles", id: "failure-count", num: true, get: (r) => r[1] },
      ];
      const rows = Object.entries(reasons).map((r) => el("tr", { testid: `failure-row-${r[0]}` }, cells(columns, r)));
      return table(columns, rows, "failures-table");
    }

    /** The campaign's own count (every poll, no extra read). */
    function renderFailures(c, body) {
      statsDue.note("counted with the campaign, every poll");
      refill(body, failuresTable(c.failures_by_reason));
    }

    /** A campaign from before the count: the statistics' pass over its records. */
    async function loadFailures(body) {
      const stats = await api(`api/v1/ota/stats/campaigns/${encodeURIComponent(id)}`);
      const reasons = stats.failures_by_reason || stats.failure_reasons || {};
      refill(body, failuresTable(reasons),
        el("p", { class: "muted", text: `average update ${num(stats.average_update_seconds)} s; ${num(stats.bytes_transferred)} bytes sent` }));
    }

    async function loadTimeline(body) {
      const answer = await api(`api/v1/ota/campaigns/${encodeURIComponent(id)}/timeline`);
      refill(body, el("ol", { testid: "timeline-list" }, (answer.events || []).map((e) =>
        el("li", { testid: "timeline-event" }, el("span", { class: "muted", text: when(e.at) }), " ",
          el("strong", { text: e.kind }), e.detail ? ` ${e.detail}` : ""))));
    }

    return {
      async refresh() {
        let campaign = null;
        await head.run(async (body) => {
          campaign = await api(`api/v1/ota/campaigns/${encodeURIComponent(id)}`);
          renderHead(campaign, body);
        });
        if (campaign) {
          renderActions(campaign, actions.body);
          renderWaves(campaign, waves.body);
        }
        const jobs = [updates.run(loadUpdates)];
        if (timelineDue.take()) jobs.push(timeline.run(loadTimeline));
        if (campaign && campaign.failures_by_reason) {
          jobs.push(failures.run(async (body) => renderFailures(campaign, body)));
        } else {
          const small = campaign === null || campaign.target_count <= STATS_AUTO_MAX;
          if (statsDue.take(small)) jobs.push(failures.run(loadFailures));
        }
        await Promise.all(jobs);
      },
    };
  }

  // -- fleet and vehicles --------------------------------------------------------------

  function expiry(certificate) {
    if (!certificate || !certificate.expires_at) return el("span", { class: "muted", text: "no certificate" });
    const days = Math.floor((new Date(certificate.expires_at).getTime() - Date.now()) / 86400000);
    const revoked = Boolean(certificate.revoked_at);
    return el("span", { class: revoked || days < 7 ? "bad" : days < 30 ? "warn" : "" },
      `${when(certificate.expires_at)} (${revoked ? "revoked" : `${days} d`})`);
  }

  function fleetView(main) {
    main.append(el("h2", { text: "Fleet" }));
    const versionsDue = throttled(VERSIONS_MS, "versions");
    const distribution = panel(main, "Installed versions by model and region", "versions", versionsDue.control);
    const search = panel(main, "Vehicles", "vehicles");
    const paging = pager("vehicles-pager");
    const fields = {
      vin_prefix: el("input", { type: "search", testid: "search-vin", placeholder: "VIN prefix", maxlength: 21 }),
      model: el("input", { type: "text", testid: "search-model", placeholder: "model", maxlength: 100 }),
      region: el("input", { type: "text", testid: "search-region", placeholder: "region", maxlength: 30 }),
      installed_version: el("input", { type: "text", testid: "search-version", placeholder: "version", maxlength: 100 }),
    };
    const form = el("form", { testid: "search", on: { submit: (event) => { event.preventDefault(); paging.reset(); kick(); } } },
      Object.values(fields), el("button", { type: "submit", text: "search", testid: "search-submit" }));
    main.insertBefore(form, search.section);

    async function loadVersions(body) {
      const answer = await api("api/v1/fleet/versions");
      const rows = answer.groups.map((g) => {
        const total = g.total || 0;
        const versions = Object.entries(g.versions).sort((a, b) => b[1] - a[1]);
        const chart = el("div", { class: "bar" });
        versions.forEach(([_, count], i) => {
          const part = el("span", { class: i === 0 ? "s-completed" : i === 1 ? "s-in_progress" : "s-rolled_back" });
          part.style.width = `${total ? (count * 100 / total).toFixed(2) : 0}%`;
          chart.append(part);
        });
        return el("tr", { testid: `versions-row-${g.model}-${g.region}` },
          el("td", { text: g.model }), el("td", { text: g.region }), el("td", { class: "num", testid: "versions-total", text: num(total) }),
          el("td", {}, chart),
          el("td", { testid: "versions-list" }, versions.map(([v, n]) => el("span", { testid: `version-${v}`, text: `${v}: ${n}  ` }))));
      });
      const columns = [{ label: "model" }, { label: "region" }, { label: "vehicles", num: true }, { label: "share" }, { label: "versions" }];
      refill(body, el("p", { testid: "versions-fleet-total", text: `${num(answer.total)} active vehicles` }), table(columns, rows, "versions-table"));
    }

    async function loadVehicles(body) {
      const query = new URLSearchParams({ limit: String(PAGE) });
      for (const [name, input] of Object.entries(fields)) if (input.value.trim()) query.set(name, input.value.trim());
      if (paging.cursor) query.set("cursor", paging.cursor);
      const page = await api(`api/v1/vehicles?${query}`);
      const columns = [
        { label: "vehicle", id: "vehicle-id", get: (v) => link(vehicleHref(v.vehicle_id), v.vehicle_id) },
        { label: "model", id: "vehicle-model", get: (v) => v.model },
        { label: "region", id: "vehicle-region", get: (v) => v.region },
        { label: "year", id: "vehicle-year", num: true, get: (v) => v.year },
        { label: "version", id: "vehicle-version", get: (v) => v.installed_version },
        { label: "status", id: "vehicle-status", get: (v) => v.status },
        { label: "last seen", id: "vehicle-seen", get: (v) => when(v.last_seen_at) },
        { label: "certificate expires", id: "vehicle-cert-expiry", get: (v) => expiry(v.certificate) },
      ];
      const rows = page.items.slice(0, PAGE).map((v) => el("tr", { testid: `vehicle-row-${v.vehicle_id}` }, cells(columns, v)));
      refill(body, table(columns, rows, "vehicles-table"), paging.render(page.next_cursor));
    }

    return {
      async refresh() {
        const jobs = [search.run(loadVehicles)];
        if (versionsDue.take()) jobs.push(distribution.run(loadVersions));
        await Promise.all(jobs);
      },
    };
  }

  /** A line chart of one signal, oldest left; drawn here, nothing fetched. */
  function chart(signal, points) {
    const width = 320;
    const height = 110;
    const pad = 24;
    const values = points.map((p) => p.value);
    const low = Math.min(...values);
    const high = Math.max(...values);
    const span = high - low || 1;
    const first = points[0].t;
    const range = points[points.length - 1].t - first || 1;
    const coords = points.map((p) => [
      pad + ((p.t - first) / range) * (width - 2 * pad),
      height - pad - ((p.value - low) / span) * (height - 2 * pad),
    ]);
    const line = svg("polyline", { points: coords.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ") });
    const picture = svg("svg", { class: "chart", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "data-testid": `chart-${signal}`, "data-points": points.length },
      svg("title", {}, `${signal}: ${points.length} samples`),
      svg("text", { x: 2, y: 12 }, String(high)),
      svg("text", { x: 2, y: height - 4 }, String(low)),
      line);
    return el("figure", { class: "chart" }, picture, el("figcaption", { text: `${signal} (${points.length} samples, ${low} – ${high})` }));
  }

  function vehicleView(main, id) {
    main.append(el("p", {}, link("#/fleet", "← fleet", "back")), el("h2", { testid: "vehicle-title", text: id }));
    const details = panel(main, "Vehicle", "vehicle");
    const telemetry = panel(main, "Recent telemetry", "telemetry");
    const history = panel(main, "Update history", "history");
    const paging = pager("history-pager");

    async function loadDetails(body) {
      const v = await api(`api/v1/vehicles/${encodeURIComponent(id)}`);
      const active = v.active_update;
      refill(body, facts([
        ["model", `${v.make} ${v.model} (${v.year})`, "vehicle-model"],
        ["region", v.region, "vehicle-region"],
        ["installed version", v.installed_version, "vehicle-version"],
        ["status", v.status, "vehicle-status"],
        ["certificate", v.certificate ? v.certificate.certificate_id : "–", "vehicle-cert"],
        ["certificate expires", expiry(v.certificate), "vehicle-cert-expiry"],
        ["last seen", when(v.last_seen_at), "vehicle-seen"],
        ["last telemetry", when(v.last_telemetry_at), "vehicle-last-telemetry"],
        ["active update", active ? `${active.from_version} → ${active.to_version}: ${active.state}` : "none", "vehicle-active-update"],
      ], "vehicle-facts"));
    }

    async function loadTelemetry(body) {
      const answer = await api(`api/v1/vehicles/${encodeURIComponent(id)}/telemetry?limit=100`);
      const items = [...(answer.items || [])].reverse(); // oldest first, left to right
      const signals = new Map();
      for (const item of items) {
        for (const [name, value] of Object.entries(item)) {
          if (NOT_CHARTED.has(name) || typeof value !== "number" || !Number.isFinite(value)) continue;
          if (!signals.has(name)) signals.set(name, []);
          signals.get(name).push({ t: item.timestamp_ms || 0, value });
        }
      }
      const charts = [...signals.entries()].filter(([, points]) => points.length > 0).map(([name, points]) => chart(name, points));
      refill(body, el("p", { class: "muted", testid: "telemetry-count", text: `${items.length} samples, newest ${when(items.length ? items[items.length - 1].timestamp : null)}` }),
        charts.length ? el("div", { class: "charts", testid: "charts" }, charts) : el("p", { class: "muted", text: "no telemetry stored" }));
    }

    async function loadHistory(body) {
      const query = new URLSearchParams({ limit: "20" });
      if (paging.cursor) query.set("cursor", paging.cursor);
      const page = await api(`api/v1/ota/devices/${encodeURIComponent(id)}/updates?${query}`);
      const columns = [
        { label: "update", id: "history-update", get: (u) => u.update_id },
        { label: "campaign", id: "history-campaign", get: (u) => (u.campaign_id ? link(campaignHref(u.campaign_id), u.campaign_id.slice(0, 8)) : "–") },
        { label: "versions", id: "history-versions", get: (u) => `${u.from_version} → ${u.to_version}` },
        { label: "state", id: "history-state", get: (u) => u.state },
        { label: "reason", id: "history-reason", get: (u) => u.reason || "" },
        { label: "notified", id: "history-notified", get: (u) => when(u.notified_at_ms) },
        { label: "ended", id: "history-completed", get: (u) => when(u.completed_at_ms) },
      ];
      const rows = page.items.map((u) => el("tr", { testid: `history-row-${u.update_id}` }, cells(columns, u)));
      refill(body, el("p", { class: "muted", testid: "history-summary", text: `${num(page.total)} updates, ${num(page.completed)} completed, ${num(page.failed)} failed` }),
        table(columns, rows, "history-table"), paging.render(page.next_cursor));
    }

    return { async refresh() { await Promise.all([details.run(loadDetails), telemetry.run(loadTelemetry), history.run(loadHistory)]); } };
  }

  // -- dead letters ----------------------------------------------------------------------

  /** Listing an SQS-backed queue receives its messages and hides them for up to
   * 30 s, so this view never polls: it lists once when opened, after a replay,
   * on a queue or reason chosen and from Refresh, DLQ_LIMIT records a time, the
   * reason filtered by the API. */
  function dlqView(main) {
    main.append(el("h2", { text: "Dead letters" }));
    if (!allowed("dlq.read")) {
      main.append(el("p", { class: "error", testid: "dlq-forbidden", text: "dead-letter queues need the operator role" }));
      return { manual: true, async refresh() {} };
    }
    const state = { queue: "telemetry", reason: "", record: null, counts: new Map(), all: null };
    const tabs = el("div", { class: "actions", testid: "dlq-queues" });
    const reload = el("button", { type: "button", text: "Refresh", testid: "dlq-refresh", on: { click: () => kick() } });
    main.append(el("div", { class: "actions" }, tabs, reload,
      el("span", { class: "muted", text: `lists ${DLQ_LIMIT} records at most; not refreshed by itself (a listing hides SQS messages for 30 s)` })));
    const reasons = panel(main, "By reason", "dlq-reasons");
    const records = panel(main, "Records", "dlq-records");
    const inspect = panel(main, "Record", "dlq-inspect");
    const outcome = el("p", { testid: "dlq-outcome", class: "muted" });
    inspect.section.append(outcome);
    const select = (patch) => { Object.assign(state, patch); kick(); };

    function renderTabs() {
      refill(tabs, ...QUEUES.map((q) => el("button", { type: "button", text: q, testid: `dlq-queue-${q}`, disabled: q === state.queue,
        on: { click: () => select({ queue: q, reason: "", record: null, counts: new Map(), all: null }) } })));
    }

    function renderReasons() {
      const more = (n, truncated) => `${n}${truncated ? "+" : ""}`;
      refill(reasons.body, el("div", { class: "actions" },
        el("button", { type: "button", text: state.all ? `all (${more(state.all.count, state.all.truncated)})` : "all",
          testid: "dlq-reason-all", disabled: !state.reason, on: { click: () => select({ reason: "" }) } }),
        [...state.counts.entries()].map(([reason, c]) => el("button", { type: "button", testid: `dlq-reason-${reason}`,
          disabled: reason === state.reason, text: `${reason} (${more(c.count, c.truncated)})`, on: { click: () => select({ reason }) } }))));
    }

    function renderInspect() {
      const r = state.record;
      if (!r) { refill(inspect.body, el("p", { class: "muted", text: "choose a record to inspect" })); return; }
      const replay = allowed("dlq.replay")
        ? el("button", { type: "button", text: "replay", testid: "dlq-replay", on: { click: () => replayRecord(r) } })
        : el("p", { class: "muted", text: "replay needs the operator role" });
      refill(inspect.body, facts(Object.entries(r).map(([k, v]) => [k,
        k.endsWith("_at") ? `${when(v)} (${v})` : typeof v === "object" ? JSON.stringify(v) : v, `dlq-field-${k}`]), "dlq-record"), replay);
    }

    /** The record whole (payload, properties, context) from the operator-only read;
     * the listing's summary when that read is refused. */
    async function inspectRecord(r) {
      try {
        const full = await api(`api/v1/dlq/${encodeURIComponent(r.queue)}/records/${encodeURIComponent(r.record_id)}`);
        const { payload_b64: b64, ...rest } = full;
        state.record = { ...rest, payload: preview(b64) };
        showError("");
      } catch (error) {
        state.record = r;
        showError(`inspect: ${describe(error)}`);
      }
      renderInspect();
    }

    /** What a payload holds, as text: printable UTF-8 as it is (up to 512
     * characters), anything else as the hex of its first 64 bytes. */
    function preview(b64) {
      const bytes = Uint8Array.from(atob(b64 || ""), (c) => c.charCodeAt(0));
      try {
        const text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
        if (!/[\u0000-\u0008\u000e-\u001f\u007f]/.test(text)) {
          return `text, ${bytes.length} bytes: ${text.slice(0, 512)}${text.length > 512 ? " …" : ""}`;
        }
      } catch (_) { /* not UTF-8: shown as hex */ }
      const hex = [...bytes.slice(0, 64)].map((b) => b.toString(16).padStart(2, "0")).join(" ");
      return `binary, ${bytes.length} bytes: ${hex}${bytes.length > 64 ? " …" : ""}`;
    }

    async function replayRecord(r) {
      try {
        const answer = await api(`api/v1/dlq/${encodeURIComponent(r.queue)}/replay`, { method: "POST", body: { record_id: r.record_id } });
        const first = answer.outcomes[0];
        outcome.textContent = first ? `${first.record_id}: ${first.status}${first.detail ? ` (${first.detail})` : ""}` : "nothing replayed";
        showError("");
      } catch (error) {
        outcome.textContent = "";
        showError(`replay refused: ${describe(error)}`);
      }
      kick();
    }

    async function loadRecords(body) {
      const query = new URLSearchParams({ limit: String(DLQ_LIMIT) });
      if (state.reason) query.set("reason", state.reason);
      const answer = await api(`api/v1/dlq/${encodeURIComponent(state.queue)}?${query}`);
      const items = answer.items;
      if (state.reason) {
        state.counts.set(state.reason, { count: answer.count, truncated: answer.truncated });
      } else {
        // the reasons among the records listed (all of them unless truncated)
        state.all = { count: answer.count, truncated: answer.truncated };
        state.counts = new Map();
        for (const r of items) {
          const c = state.counts.get(r.reason) || { count: 0, truncated: answer.truncated };
          c.count += 1;
          state.counts.set(r.reason, c);
        }
      }
      const columns = [
        { label: "record", id: "dlq-record-id", get: (r) => r.record_id },
        { label: "reason", id: "dlq-reason", get: (r) => r.reason },
        { label: "source", id: "dlq-source", get: (r) => r.source },
        { label: "vehicle", id: "dlq-vehicle", get: (r) => (r.vehicle_id ? link(vehicleHref(r.vehicle_id), r.vehicle_id) : "–") },
        { label: "attempts", id: "dlq-attempts", num: true, get: (r) => r.attempts },
        { label: "last failed", id: "dlq-last-failed", get: (r) => when(r.last_failed_at) },
        { label: "", id: "dlq-open", get: (r) => el("button", { type: "button", text: "inspect", testid: `dlq-inspect-${r.record_id}`,
          on: { click: () => inspectRecord(r) } }) },
      ];
      const rows = items.map((r) => el("tr", { testid: `dlq-row-${r.record_id}` }, cells(columns, r)));
      refill(body, el("p", { class: "muted", testid: "dlq-count", text: `${answer.count} records${answer.truncated ? ` (the first ${DLQ_LIMIT}; more not listed)` : ""}${state.reason ? `, reason ${state.reason}` : ""}` }),
        table(columns, rows, "dlq-table"));
      const r = state.record;
      if (r && !r.gone && (!state.reason || r.reason === state.reason) && !items.some((i) => i.record_id === r.record_id)) {
        state.record = { ...r, gone: answer.truncated ? "not in the latest listing" : "no longer in the queue" };
      }
    }

    return {
      manual: true,
      async refresh() {
        renderTabs();
        await records.run(loadRecords);
        renderReasons();
        renderInspect();
      },
    };
  }

  // -- sign in, routes --------------------------------------------------------------------

  function signOut(message) {
    credential = null;
    me = null;
    current = null;
    clearTimeout(timer);
    timer = null;
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(KIND);
    byId("view").replaceChildren();
    byId("nav").hidden = true;
    byId("logout").hidden = true;
    byId("who").textContent = "";
    byId("login").hidden = false;
    showError(message || "");
  }

  async function signIn(secret, how) {
    credential = secret;
    kind = how === "token" ? "token" : "key";
    sessionStorage.setItem(KEY, secret);
    sessionStorage.setItem(KIND, kind);
    try {
      me = await api("api/v1/me");
    } catch (error) {
      if (!credential) return; // 401: signed out already, the error shown
      me = { principal: "?", roles: [], permissions: {} };
      showError(`who am I: ${describe(error)}; actions hidden`);
    }
    byId("login").hidden = true;
    byId("nav").hidden = false;
    byId("logout").hidden = false;
    byId("who").textContent = `${me.principal} (${(me.roles || []).join(", ") || "no role"}; ${kind === "token" ? "bearer token" : "API key"})`;
    const keep = byId("error").textContent;
    route();
    if (keep && !byId("error").textContent) showError(keep);
  }

  function route() {
    if (!credential) return;
    let parts;
    try {
      parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
    } catch (_) {
      parts = [];
    }
    for (const a of document.querySelectorAll("nav a")) a.classList.toggle("current", a.getAttribute("href") === `#/${parts[0]}`);
    const [page, id] = parts;
    if (page === "campaigns" && id) {
      if (parts.length === 2 && CAMPAIGN_ID.test(id)) mount(campaignView, id); else notFound("campaign", id);
    } else if (page === "campaigns") mount(campaignsView);
    else if (page === "fleet") mount(fleetView);
    else if (page === "vehicles" && id) {
      if (parts.length === 2 && VIN.test(id)) mount(vehicleView, id); else notFound("vehicle", id);
    } else if (page === "dlq") mount(dlqView);
    else location.hash = "#/campaigns";
  }

  /** A fragment whose id is not one: nothing is asked of the API. */
  function notFound(what, id) {
    current = null;
    clearTimeout(timer);
    timer = null;
    byId("view").replaceChildren(el("p", {}, link(what === "vehicle" ? "#/fleet" : "#/campaigns", "← back", "back")));
    showError(`not found: ${JSON.stringify(String(id || ""))} is no ${what} id`);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const how = byId("login-kind");
    const showHint = () => {
      byId("login-hint").textContent = how.value === "token"
        ? "The token (on AWS, a Cognito ID token) is kept in this tab only (sessionStorage) and sent as Authorization: Bearer."
        : "The key is kept in this tab only (sessionStorage) and sent as X-API-Key.";
    };
    how.value = kind;
    how.addEventListener("change", showHint);
    showHint();
    byId("login").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = byId("login-key");
      const secret = input.value.trim();
      input.value = "";
      if (secret) { showError(""); signIn(secret, how.value); }
    });
    byId("logout").addEventListener("click", () => { signOut(""); });
    window.addEventListener("hashchange", route);
    // For tests and the curious: call an action as the page does, buttons or not.
    window.v2cDashboard = { act, refresh: kick, get polls() { return polls; }, get polling() { return timer !== null; } };
    if (credential) signIn(credential, kind); else signOut("");
  });
})();
