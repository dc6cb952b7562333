// The vguard web console: polls the REST API of the controller that serves
// this page and draws what it answers. Plain JS, no framework, nothing from
// another origin (the page's Content-Security-Policy says so too). Every
// text from the API goes into the DOM as textContent, never as markup.
"use strict";

(() => {
  const API = "/api/v1";
  const POLL_MS = 2000;
  const OPENAPI_EVERY_MS = 30000;   // the flows endpoint may come with a newer controller
  const TOKEN_KEY = "vguard-token";
  const REFUSED = "refused";      // a flow record's verdict: "allowed" or this
  const $ = (id) => document.getElementById(id);

  const state = {
    flowsListed: false, openapiAt: 0, topologyText: "", segments: [], modes: [],
    matrix: null, matrixDrawn: "", change: null,
  };

  // ------------------------------------------------------------ helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(text(child)));
    }
    return node;
  }

  function svg(tag, attrs, label) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (label !== undefined) node.textContent = label;
    return node;
  }

  function text(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }

  function when(v) {
    // Seconds since the epoch (the controller's clock) as local time.
    if (typeof v === "number" && v > 1e9) return new Date(v * 1000).toLocaleTimeString();
    return text(v);
  }

  function yesNo(v, good = true) {
    if (v === null || v === undefined) return el("span", { class: "muted" }, "unknown");
    return el("span", { class: v === good ? "good" : "bad" }, v ? "yes" : "no");
  }

  function table(id, head, rows) {
    const t = $(id);
    t.replaceChildren(el("tr", {}, ...head.map((h) => el("th", {}, h))));
    for (const row of rows) t.append(row instanceof Node ? row : el("tr", {}, ...row.map(cell)));
  }

  function cell(v) {
    if (v instanceof Node) return v.tagName === "TD" ? v : el("td", {}, v);
    return el("td", typeof v === "number" ? { class: "num" } : {}, v);
  }

  async function getJSON(path) {
    const r = await fetch(API + path, { cache: "no-store" });
    if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
    return r.json();
  }

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

  // ------------------------------------------------------------ polling

  async function poll() {
    try {
      if (Date.now() - state.openapiAt > OPENAPI_EVERY_MS) {
        // Ask for /flows only when the API lists it: a 404 would be a console error.
        const doc = await getJSON("/openapi.json");
        state.flowsListed = `${API}/flows` in (doc.paths || {});
        state.openapiAt = Date.now();
      }
      const names = ["health", "hypervisors", "matrix", "policy", "counters", "topology"];
      const [health, hvs, matrix, policy, counters, topology] =
        await Promise.all(names.map((n) => getJSON("/" + n)));
      state.modes = policy.modes.scope;
      drawTopology(topology);
      drawMatrix(matrix);
      drawHealth(health, hvs);
      drawCounters(counters);
      if (!state.flowsListed) {
        $("flows-note").textContent = "flow records: not available (this controller has no /api/v1/flows)";
      } else if (health.flow_collector === null) {    // started with the collector off
        $("flows-note").textContent = "flow records: not available (the flow collector is off)";
      } else {
        try {
          const [newest, refused] = await Promise.all(
            ["/flows?limit=20", `/flows?verdict=${REFUSED}&limit=10`].map(getJSON));
          drawFlows(newest.flows || [], refused.flows || []);
        } catch (e) {          // the rest of the page is still good
          $("flows-note").textContent = `flow records: ${e.message}`;
        }
      }
      $("status").textContent = `updated ${new Date().toLocaleTimeString()}`;
      $("status").className = "muted";
    } catch (e) {
      $("status").textContent = `controller unreachable or failing: ${e.message}`;
      $("status").className = "bad";
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  // ------------------------------------------------------------ topology

  const W = 1000, H = 460;   // the SVG viewBox in index.html

  function drawTopology(doc) {
    const asText = JSON.stringify(doc);
    if (asText === state.topologyText) return;     // unchanged: keep the drawing
    state.topologyText = asText;
    const segIndex = new Map(doc.graph.segments.map((s, i) => [s.name, i % 8]));
    const at = new Map(doc.nodes.map((n) => [n.id, [30 + n.x * (W - 60), 20 + n.y * (H - 50)]]));
    const g = $("graph");
    g.replaceChildren();
    for (const e of doc.edges) {
      const [x1, y1] = at.get(e.source), [x2, y2] = at.get(e.target);
      const line = svg("line", { x1, y1, x2, y2, class: `${e.kind}${e.down ? " down" : ""}` });
      line.append(svg("title", {}, edgeTitle(e)));
      g.append(line);
      if (e.port !== undefined) {
        // The port number near the hypervisor's end, where it belongs.
        const hvEnd = e.source.startsWith("hv:") ? [x1, y1, x2, y2] : [x2, y2, x1, y1];
        const px = hvEnd[0] + (hvEnd[2] - hvEnd[0]) * 0.3, py = hvEnd[1] + (hvEnd[3] - hvEnd[1]) * 0.3;
        g.append(svg("text", { x: px, y: py - 3, class: "port" }, String(e.port)));
      }
    }
    for (const n of doc.nodes) g.append(drawNode(n, at.get(n.id), segIndex));
    const legend = $("legend");
    legend.replaceChildren("segments:");
    for (const s of doc.graph.segments) {
      legend.append(el("span", { class: `swatch seg-${segIndex.get(s.name)}` }), `${s.name} (VLAN ${s.vlan})`);
    }
  }

  function edgeTitle(e) {
    const parts = [`${e.kind} link`];
    if (e.port !== undefined) parts.push(`port ${e.port}`);
    if (e.vlans) parts.push(`VLANs ${e.vlans.join(", ")}`);
    if (e.via) parts.push(`via ${e.via}`);
    if (e.vlan !== undefined) parts.push(`VLAN ${e.vlan}`);
    if (e.down) parts.push("DOWN");
    return parts.join(", ");
  }

  function drawNode(n, [x, y], segIndex) {
    const group = svg("g", { class: `node node-${n.kind}`, "data-id": n.id, "data-kind": n.kind });
    const title = [n.label];
    if (n.kind === "hypervisor") {
      group.classList.add(!n.connected ? "offline" : n.synced ? "ok" : "syncing");
      group.append(svg("rect", { x: x - 32, y: y - 14, width: 64, height: 28, rx: 5 }));
      group.append(svg("text", { x, y: y + 4 }, n.label));
      title.push(`dpid ${n.dpid}`, n.connected ? (n.synced ? "connected, in sync" : "connected, not in sync")
                                               : "not connected",
                 `firewall ${text(n.firewall)}`, `${text(n.flows)} flows`);
      group.append(svg("title", {}, title.join("\n")));
      return group;
    }
    if (n.kind === "core" || n.kind === "remote-ids") {
      const w = Math.max(90, n.label.length * 7 + 16);
      group.append(svg("rect", { x: x - w / 2, y: y - 12, width: w, height: 24, rx: 12 }));
      group.append(svg("text", { x, y: y + 4 }, n.label));
      if (n.via) title.push(`copies via ${n.via}`);
    } else if (n.kind === "firewall" || n.kind === "ids") {
      if (n.kind === "firewall") group.classList.add(text(n.state));
      const pts = n.kind === "firewall"
        ? [[x - 10, y - 10], [x + 10, y - 10], [x + 10, y + 10], [x - 10, y + 10]]
        : [[x, y - 11], [x + 11, y], [x, y + 11], [x - 11, y]];
      group.append(svg("polygon", { points: pts.map((p) => p.join(",")).join(" ") }));
      group.append(svg("text", { x, y: y + 24 }, n.label));
      title.push(`on ${n.hypervisor}`);
      if (n.kind === "firewall") title.push(`state ${text(n.state)}`);
    } else {   // a VM, running or not
      group.append(svg("circle", { cx: x, cy: y, r: 9, class: `seg-${segIndex.get(n.segment) ?? 0}` }));
      group.append(svg("text", { x, y: y + 22 }, n.label));
      title.push(`segment ${n.segment}`, `${text(n.ip)} ${n.mac}`,
                 n.kind === "vm" ? `on ${n.hypervisor} port ${n.port}` : "not running");
    }
    group.append(svg("title", {}, title.join("\n")));
    return group;
  }

  // ------------------------------------------------------------ matrix

  function drawMatrix(matrix) {
    state.matrix = matrix;
    const canWrite = token() !== "";
    // Redraw only on a change: a rebuilt table would swallow a click that
    // lands while the poll replaces the button under the pointer.
    const drawn = JSON.stringify([canWrite, matrix]);
    if (drawn === state.matrixDrawn) return;
    state.matrixDrawn = drawn;
    $("matrix-hint").textContent = canWrite
      ? "Click a cell to change that pair's mode (the diagonal: the mode inside a segment)."
      : "Enter the write token above to change modes from here.";
    const rows = matrix.segments.map((a) => {
      const tr = el("tr", {}, el("th", {}, a));
      for (const b of matrix.segments) {
        const mode = matrix.modes[a][b];
        const td = el("td", { class: `mode-${mode}`, "data-a": a, "data-b": b, "data-mode": mode });
        if (canWrite) {
          const button = el("button", { type: "button", class: `mode-${mode}` }, mode);
          button.addEventListener("click", () => openChange(a, b, mode));
          td.append(button);
        } else {
          td.textContent = mode;
        }
        tr.append(td);
      }
      return tr;
    });
    table("matrix", ["from \\ to", ...matrix.segments], rows);
  }

  function openChange(a, b, mode) {
    state.change = { a, b };
    $("change-what").textContent = a === b
      ? `Inside segment ${a}: now ${mode}.`
      : `Between ${a} and ${b} (both ways): now ${mode}.`;
    const select = $("change-mode");
    select.replaceChildren(...state.modes.map((m) => el("option", { value: m }, m)));
    select.value = state.modes.find((m) => m !== mode) || mode;
    $("change").hidden = false;
    $("change-answer").textContent = "";
  }

  async function confirmChange() {
    const { a, b } = state.change || {};
    if (a === undefined) return;
    const mode = $("change-mode").value;
    const path = a === b ? `/policy/segments/${encodeURIComponent(a)}`
                         : `/policy/pairs/${encodeURIComponent(a)}/${encodeURIComponent(b)}`;
    $("change").hidden = true;
    state.change = null;
    const answer = $("change-answer");
    answer.className = "muted";
    answer.textContent = `applying ${mode}…`;
    try {
      // Same origin only (a relative URL): the token never leaves this controller.
      const r = await fetch(API + path, {
        method: "PUT", cache: "no-store",
        headers: { "Content-Type": "application/json", "Authorization": `Bearer ${token()}` },
        body: JSON.stringify({ mode }),
      });
      const body = await r.json().catch(() => ({}));
      const what = a === b ? `inside ${a}` : `${a} ↔ ${b}`;
      if (r.status === 200) {
        answer.className = "good";
        answer.textContent = body.changed === false
          ? `200: ${what} was already ${mode}; nothing changed`
          : `200 applied: ${what} is ${mode} on ${(body.applied_to || []).join(", ") || "no hypervisor"}`;
      } else if (r.status === 202) {
        answer.className = "warn";
        answer.textContent = `202: ${body.warning || "not in force everywhere"}`;
      } else {
        answer.className = "bad";
        answer.textContent = `${r.status}: ${body.error || r.statusText}`;
      }
    } catch (e) {
      answer.className = "bad";
      answer.textContent = `not sent: ${e.message}`;
    }
  }

  // ------------------------------------------------------------ health, counters, flows

  function drawHealth(health, hvs) {
    const ready = $("ready");
    ready.textContent = health.ready ? "ready" : "not ready";
    ready.className = health.ready ? "good" : "bad";
    const rows = hvs.map((hv) => {
      const firewall = hv.firewall;
      const fwClass = { up: "good", down: "bad", unknown: "warn" }[firewall] || "muted";
      const mirror = hv.mirror ? `${hv.mirror.via} (port ${text(hv.mirror.port)})` : "none";
      const down = hv.ports_down.map((p) => `${p.port}${p.role ? " " + p.role : ""}`).join(", ");
      return [hv.name, hv.dpid, yesNo(hv.connected), yesNo(hv.synced), hv.flows,
              when(hv.last_sync), el("span", { class: fwClass }, firewall),
              hv.ids_port === null ? "–" : hv.ids_port, mirror,
              down ? el("span", { class: "bad" }, down) : "none"];
    });
    table("health", ["hypervisor", "dpid", "connected", "in sync", "flows", "last sync",
                     "firewall", "IDS port", "copies go", "ports down"], rows);
    $("health-extra").textContent =
      `learned hosts ${health.learned_hosts.length}, packet-ins ${health.packet_ins}, ` +
      `learning bans ${health.learn_bans.length}`;
  }

  function drawCounters(doc) {
    const hvNames = Object.keys(doc.hypervisors).sort();
    const reasons = [...new Set(hvNames.flatMap((h) => Object.keys(doc.hypervisors[h].reasons)))].sort();
    const traffic = (t) => (t ? `${t.packets} pkts / ${t.bytes} B` : "–");
    // Only the reasons that counted something: most entries never match.
    const counted = reasons.filter((r) => hvNames.some((h) => doc.hypervisors[h].reasons[r]?.packets));
    const rows = counted.map((r) => [r, ...hvNames.map((h) => traffic(doc.hypervisors[h].reasons[r]))]);
    rows.push([el("strong", {}, "copied to the IDS"),
               ...hvNames.map((h) => traffic(doc.hypervisors[h].mirrored))]);
    const dropped = (h) => Object.values(doc.hypervisors[h].dropped)
      .reduce((t, x) => ({ packets: t.packets + x.packets, bytes: t.bytes + x.bytes }),
              { packets: 0, bytes: 0 });
    rows.push([el("strong", {}, "dropped"), ...hvNames.map((h) => traffic(dropped(h)))]);
    table("counters", ["rule reason", ...hvNames], rows);
  }

  function rule(r) {
    // The deciding entry, as the trace names it: table, priority.
    if (r && typeof r === "object" && "table" in r) return `${r.table}, priority ${r.priority}`;
    return text(r);
  }

  function drawFlows(records, refusals) {
    $("flows-note").textContent = records.length ? "" : "no flow records yet";
    const head = ["last seen", "from", "to", "segments", "proto", "verdict", "reason", "rule",
                  "packets", "bytes", "hypervisor"];
    const row = (f) => {
      const tr = el("tr", f.verdict === REFUSED ? { class: "refused" } : {});
      for (const v of [when(f.last_seen), f.src_vm, f.dst_vm, `${text(f.src_segment)} → ${text(f.dst_segment)}`,
                       f.proto, f.verdict, f.reason, rule(f.rule), f.packets, f.bytes, f.hypervisor]) {
        tr.append(cell(v));
      }
      return tr;
    };
    table("flows", head, records.map(row));
    table("refusals", head, refusals.map(row));
  }

  // ------------------------------------------------------------ start

  function showToken() {
    $("token-state").textContent = token() ? "token set (this tab only)" : "read-only";
    if (state.matrix) drawMatrix(state.matrix);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("token-use").addEventListener("click", () => {
      const value = $("token").value.trim();
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      $("token").value = "";
      showToken();
    });
    $("token").addEventListener("keydown", (e) => { if (e.key === "Enter") $("token-use").click(); });
    $("token-forget").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      $("change").hidden = true;
      showToken();
    });
    $("change-confirm").addEventListener("click", confirmChange);
    $("change-cancel").addEventListener("click", () => {
      $("change").hidden = true;
      state.change = null;
    });
    showToken();
    poll();
  });
})();
