// ftvm dashboard: loads the history (/api/state), then follows the rounds
// the server pushes over server-sent events (/events). For each pair: the
// role of each host (data-role on .role, for people and tests alike), its
// phase and generation, four uPlot charts over the last minutes (lag, log
// bandwidth, output hold time, guest MIPS), and below, the timeline of
// failovers, joins and phase changes.
"use strict";

const WINDOW_S = 600;
const COLORS = ["#1f8f4e", "#2f6fd6", "#d68a2f", "#8e44ad"];
const PLOTS = [
  { key: "lag_ms", title: "execution lag (ms)" },
  { key: "log_mbit_s", title: "log bandwidth (Mbit/s)" },
  { key: "hold_us_p50", title: "output hold, p50 (µs)" },
  { key: "mips", title: "guest MIPS" },
];

let targets = [];
let groups = [];
let rounds = [];
const charts = []; // per group: [{plot, key}]

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
}

function build() {
  const main = document.getElementById("pairs");
  main.textContent = "";
  charts.length = 0;
  groups.forEach((g, gi) => {
    const hosts = el("div", { class: "hosts" });
    for (const ti of g) {
      hosts.append(el("div", { class: "host", id: "host-" + ti },
        el("span", { class: "name" }, targets[ti]),
        el("span", { class: "role", "data-target": targets[ti], "data-role": "unknown" }, "…"),
        el("div", { class: "facts" }, "")));
    }
    const box = el("div", { class: "charts" });
    const pair = el("section", { class: "pair", id: "pair-" + gi },
      el("h2", {}, el("span", { class: "vm" }, "VM"), " ", el("span", { class: "gen" }, "")),
      hosts, box);
    main.append(pair);
    const cs = [];
    for (const p of PLOTS) {
      const div = el("div", { class: "chart" }, el("h3", {}, p.title));
      box.append(div);
      const series = [{}].concat(g.map((ti, i) => ({
        label: targets[ti], stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: false,
      })));
      const plot = new uPlot({
        width: 330, height: 160, series,
        scales: { x: { time: false } },
        axes: [{ label: "s" }, {}],
        legend: { show: true },
      }, [[]].concat(g.map(() => [])), div);
      cs.push({ plot, key: p.key });
    }
    charts.push(cs);
  });
}

function fmt(v, digits) {
  return v === null || v === undefined ? "–" : Number(v).toFixed(digits);
}

function showLatest() {
  const r = rounds[rounds.length - 1];
  if (!r) return;
  groups.forEach((g, gi) => {
    let vm = "", gen = null;
    for (const ti of g) {
      const s = r.samples[ti] || {};
      const card = document.getElementById("host-" + ti);
      const role = card.querySelector(".role");
      role.dataset.role = s.role || "unknown";
      role.textContent = s.role || "unknown";
      const facts = s.role === "down"
        ? "unreachable: " + (s.error || "")
        : `${s.phase} · generation ${s.generation ?? "–"} · ${s.connected ? "connected" : "not connected"}` +
          ` · lag ${fmt(s.lag_ms, 0)} ms · ${fmt(s.mips, 1)} MIPS` + (s.error ? " · " + s.error : "");
      card.querySelector(".facts").textContent = facts;
      if (s.vm) vm = s.vm;
      if (s.generation !== null && s.generation !== undefined && s.role === "primary") gen = s.generation;
    }
    const pair = document.getElementById("pair-" + gi);
    pair.querySelector(".vm").textContent = vm || "VM";
    pair.querySelector(".gen").textContent = gen === null ? "" : "generation " + gen;
    pair.querySelector(".gen").dataset.generation = gen === null ? "" : String(gen);
  });
}

function redraw() {
  const now = rounds.length ? rounds[rounds.length - 1].t : 0;
  const recent = rounds.filter((r) => r.t >= now - WINDOW_S);
  groups.forEach((g, gi) => {
    for (const c of charts[gi]) {
      const data = [recent.map((r) => r.t)];
      for (const ti of g) {
        data.push(recent.map((r) => {
          const v = (r.samples[ti] || {})[c.key];
          return v === undefined ? null : v;
        }));
      }
      c.plot.setData(data);
    }
  });
}

function addEvents(evs) {
  const body = document.querySelector("#events tbody");
  for (const e of evs) {
    const row = el("tr", { class: "event", "data-kind": e.kind, "data-target": e.target },
      el("td", {}, fmt(e.t, 1) + " s"), el("td", {}, e.target),
      el("td", { class: "kind-" + e.kind }, e.kind), el("td", {}, e.text));
    body.prepend(row);
  }
}

async function load() {
  const st = await (await fetch("/api/state")).json();
  targets = st.targets;
  groups = st.groups;
  rounds = st.rounds;
  build();
  addEvents(st.events);
  showLatest();
  redraw();
  const es = new EventSource("/events");
  const conn = document.getElementById("conn");
  es.onopen = () => { conn.textContent = "live"; };
  es.onerror = () => { conn.textContent = "reconnecting…"; };
  es.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    rounds.push(msg.round);
    while (rounds.length && rounds[0].t < msg.round.t - WINDOW_S) rounds.shift();
    addEvents(msg.events);
    showLatest();
    redraw();
  };
}

load();
