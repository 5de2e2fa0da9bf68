// ocalab web: draws the topology once, then every frame (ocalab/web/frames.py documents one).
"use strict";

const CLASS_COLOR = { access: "#4e79a7", internal: "#9c9c9c", peering: "#59a14f",
                      transit: "#e15759", backbone: "#b07aa1" };
const ROLE_COLOR = { viewer: "#4e79a7", oca: "#f28e2b", origin: "#7b4ea7", control: "#777" };
let cy = null;
let bw = {};        // link -> planned Mbit/s
let linkCls = {};   // link -> class

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}
const fmt = (v, digits) => (v === null || v === undefined) ? "–" : Number(v).toFixed(digits);
const mb = (bytes) => (bytes === null || bytes === undefined) ? "–" : (bytes / 1e6).toFixed(1);

function fillRows(tableId, rows) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren(...rows);
}

function source(panel, text) {
  const p = document.getElementById(`src-${panel}`);
  p.textContent = text ? `source: ${text}` : "no source for this panel here: nothing is shown";
  p.className = text ? "source" : "source none";
}

function drawTopology(topo) {
  document.getElementById("plan").textContent = topo.plan;
  const elements = [];
  for (const n of topo.nodes) {
    elements.push({ data: { id: n.id, label: n.id, role: n.role, kind: n.kind } });
  }
  for (const e of topo.edges) {
    bw[e.id] = e.bw_mbps;
    linkCls[e.id] = e.cls;
    elements.push({ data: { id: e.id, source: e.source, target: e.target, cls: e.cls, label: "" } });
  }
  cy = cytoscape({
    container: document.getElementById("graph"), elements,
    layout: { name: "breadthfirst", roots: topo.nodes.filter(n => n.role === "viewer").map(n => n.id),
              spacingFactor: 0.85, animate: false },
    style: [
      { selector: "node", style: { label: "data(label)", "font-size": 9, "text-valign": "bottom",
          "text-wrap": "wrap",
          "background-color": n => ROLE_COLOR[n.data("role")] || "#333", width: 18, height: 18 } },
      { selector: "node[kind = 'switch']", style: { shape: "round-rectangle", width: 12, height: 12,
          "background-color": "#bbb" } },
      { selector: "node.down", style: { "background-color": "#d00", "border-width": 3, "border-color": "#600" } },
      { selector: "edge", style: { "line-color": e => CLASS_COLOR[e.data("cls")] || "#999",
          width: 2, label: "data(label)", "font-size": 8, "text-background-color": "#fff",
          "text-background-opacity": 0.8 } },
      { selector: "edge.linkdown", style: { "line-style": "dotted", "line-color": "#d00" } },
      { selector: "edge.serve", style: { "line-style": "dashed", "line-color": "#f28e2b", width: 1.5,
          "target-arrow-shape": "triangle", "target-arrow-color": "#f28e2b", "curve-style": "bezier",
          label: "" } },
    ],
  });
  const legend = document.getElementById("legend");
  for (const [cls, color] of Object.entries(CLASS_COLOR)) {
    const s = el("span", `— ${cls}`); s.style.color = color; legend.append(s);
  }
  const serve = el("span", "- - > viewer fetches from"); serve.style.color = "#f28e2b"; legend.append(serve);
  document.body.dataset.nodes = String(topo.nodes.length);
  document.body.dataset.edges = String(topo.edges.length);
}

function render(f) {
  document.getElementById("clock").textContent = new Date(f.t * 1000).toISOString().slice(11, 19) + " UTC";
  document.getElementById("arm").textContent = f.arm || "–";
  for (const p of ["links", "ocas", "sessions"]) source(p, f.sources[p]);
  cy.batch(() => {
    cy.edges(".serve").remove();
    for (const [name, l] of Object.entries(f.links || {})) {
      const e = cy.getElementById(name);
      const share = l.mbps && bw[name] ? Math.min(1, l.mbps / bw[name]) : 0;
      e.style("width", 2 + 14 * share);
      e.data("label", l.mbps >= 0.05 ? `${l.mbps.toFixed(1)} Mb/s` : "");
      e.toggleClass("linkdown", l.up === false);
    }
    for (const [name, o] of Object.entries(f.ocas || {})) {
      const n = cy.getElementById(name);
      const bad = o.status !== null && o.status !== "ok";
      n.toggleClass("down", bad);
      n.data("label", o.status && o.status !== "ok" ? `${name}\n${o.status}` : name);
    }
    for (const [host, s] of Object.entries(f.serving)) {
      if (cy.getElementById(host).nonempty() && cy.getElementById(s.server).nonempty()) {
        cy.add({ group: "edges", classes: "serve", data: { id: `serve:${host}`, source: host, target: s.server } });
      }
    }
  });
  fillRows("ocas", Object.entries(f.ocas || {}).map(([name, o]) => {
    const tr = el("tr"); tr.dataset.oca = name;
    const store = o.used_bytes === null || o.used_bytes === undefined ? "–"
      : `${mb(o.used_bytes)} / ${mb(o.capacity_bytes)} MB`;
    tr.append(el("td", name), el("td", o.tier),
              el("td", o.status || "–", "status " + (o.status === "ok" ? "ok" : o.status ? "bad" : "")),
              el("td", fmt(o.load, 2), "num"), el("td", fmt(o.hit_ratio, 3), "num"),
              el("td", store, "num"), el("td", o.fill || "–"));
    return tr;
  }));
  fillRows("sessions", f.sessions.map(s => {
    const tr = el("tr"); tr.dataset.session = s.session;
    tr.append(el("td", s.session), el("td", s.host), el("td", s.server), el("td", s.kbps, "num"),
              el("td", fmt(s.buffer_s, 1), "num"));
    return tr;
  }));
  fillRows("links", Object.entries(f.links || {}).map(([name, l]) => {
    const tr = el("tr"); tr.dataset.link = name; tr.dataset.bytes = String(l.bytes ?? "");
    tr.dataset.mbps = String(l.mbps ?? "");
    tr.append(el("td", name), el("td", linkCls[name]), el("td", fmt(l.mbps, 2), "num mbps"),
              el("td", mb(l.bytes), "num bytes"),
              el("td", l.up === null ? "–" : (l.up ? "up" : "down"), l.up === false ? "bad" : ""));
    return tr;
  }));
  document.getElementById("events").replaceChildren(...f.events.slice().reverse().map(e =>
    el("li", `${new Date(e.t * 1000).toISOString().slice(11, 19)} [${e.kind}] ${e.text}`)));
  document.body.dataset.frameT = String(f.t);
  document.body.dataset.frames = String(Number(document.body.dataset.frames || 0) + 1);
}

async function main() {
  const info = await (await fetch("/api/info")).json();
  drawTopology(info.topology);
  const mode = document.getElementById("mode");
  if (info.mode === "live") {
    mode.textContent = "live";
    const es = new EventSource("/api/stream");
    es.addEventListener("frame", ev => render(JSON.parse(ev.data)));
    es.onerror = () => { mode.textContent = "live (disconnected, retrying)"; };
    es.onopen = () => { mode.textContent = "live"; };
    return;
  }
  mode.textContent = `replay of ${info.manifest.scenario} (seed ${info.manifest.seed})`;
  const frames = await (await fetch("/api/frames")).json();
  const bar = document.getElementById("replay");
  const slider = document.getElementById("slider");
  const pos = document.getElementById("slider-pos");
  bar.hidden = false;
  slider.max = String(Math.max(0, frames.length - 1));
  const show = i => { if (frames.length) { render(frames[i]); pos.textContent = `${i + 1} / ${frames.length}`; } };
  slider.addEventListener("input", () => show(Number(slider.value)));
  let timer = null;
  document.getElementById("play").addEventListener("click", ev => {
    if (timer) { clearInterval(timer); timer = null; ev.target.textContent = "play"; return; }
    ev.target.textContent = "pause";
    timer = setInterval(() => {
      const i = Number(slider.value) + 1;
      if (i >= frames.length) { clearInterval(timer); timer = null; ev.target.textContent = "play"; return; }
      slider.value = String(i); show(i);
    }, 200);
  });
  if (!frames.length) pos.textContent = "this run has no frames (no chunks)";
  show(0);
}

main().catch(err => { document.getElementById("mode").textContent = `error: ${err}`; });
