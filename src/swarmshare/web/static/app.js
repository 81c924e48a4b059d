// swarmshare's page: one live snapshot from the daemon over server-sent events, rendered with
// textContent only (names come from other peers and are never parsed as HTML).
"use strict";

const $ = (id) => document.getElementById(id);
let last = null;

function size(n) {
  if (n === null || n === undefined) return "?";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

function ago(ts) {
  const s = Math.max(0, Date.now() / 1000 - ts);
  return s < 60 ? `${Math.round(s)} s ago` : s < 3600 ? `${Math.round(s / 60)} min ago` : `${(s / 3600).toFixed(1)} h ago`;
}

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function button(label, name, onClick, secondary) {
  const b = el("button", label, secondary ? "secondary" : "");
  b.type = "button";
  b.setAttribute("aria-label", `${label} ${name}`);
  b.addEventListener("click", onClick);
  return b;
}

async function api(method, path, body) {
  const response = await fetch(`/api/${path}`, {
    method,
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
    credentials: "same-origin",
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error((data.error && data.error.message) || `HTTP ${response.status}`);
  return data;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function renderNetwork(snap) {
  const q = $("filter").value.trim().toLowerCase();
  const items = snap.network.filter((i) => !q || i.name.toLowerCase().includes(q) || i.id.startsWith(q));
  fill($("network").tBodies[0], items.map((item) => {
    const tr = el("tr");
    tr.dataset.id = item.id;
    tr.append(el("td", item.name), el("td", size(item.size), "num"), el("td", item.peers, "num"));
    const state = el("td");
    if (item.legacy) state.append(el("span", "original scripts, unverified", "tag warn"));
    else state.append(el("span", item.complete ? "complete" : "partial", "tag"));
    if (item.here) state.append(" ", el("span", "here", "tag"));
    const act = el("td");
    act.append(button("Download", item.name, async () => {
      try { await api("POST", "downloads", { ref: item.id.startsWith("seed:") ? item.name : item.id }); }
      catch (e) { $("share-msg").textContent = `Download failed: ${e.message}`; }
    }));
    tr.append(state, act);
    return tr;
  }));
  $("network-empty").hidden = snap.network.length > 0;
}

function renderDownloads(snap) {
  $("downloads").replaceChildren(...snap.downloads.map((d) => {
    const li = el("li");
    li.dataset.id = d.id;
    li.dataset.state = d.state;
    li.append(el("strong", d.name), " ", el("span", d.state, "tag"));
    const bar = el("progress");
    bar.max = d.total_bytes || 1;
    bar.value = d.done_bytes;
    bar.setAttribute("aria-label", `${d.name} progress`);
    li.append(bar);
    const eta = d.eta ? `, ${Math.round(d.eta)} s left` : "";
    li.append(el("div", `${size(d.done_bytes)} of ${size(d.total_bytes)} · ${size(d.rate)}/s${eta} · ${d.peers_in_use} peer(s) · ${d.retried} retried`, "meta"));
    if (d.state === "done") li.append(el("div", d.dest, "path"));
    if (d.error) li.append(el("div", d.error, "meta"));
    const row = el("div", undefined, "row");
    const running = !["done", "failed", "cancelled", "paused"].includes(d.state);
    if (running) row.append(button("Pause", d.name, () => api("POST", `downloads/${d.id}/pause`), true));
    if (["paused", "failed"].includes(d.state)) row.append(button("Resume", d.name, () => api("POST", `downloads/${d.id}/resume`), true));
    if (d.state !== "done" && !d.id.startsWith("seed:")) row.append(button("Cancel", d.name, () => api("POST", `downloads/${d.id}/cancel`), true));
    li.append(row);
    return li;
  }));
  $("downloads-empty").hidden = snap.downloads.length > 0;
}

function renderShares(snap) {
  fill($("shares").tBodies[0], snap.library.map((r) => {
    const tr = el("tr");
    tr.append(el("td", r.name), el("td", size(r.size), "num"), el("td", r.path, "path"));
    const act = el("td");
    act.append(button("Stop sharing", r.name, () => api("POST", "unshare", { ref: r.id }), true));
    tr.append(act);
    return tr;
  }));
}

function renderPeers(snap) {
  fill($("peers").tBodies[0], snap.peers.map((p) => {
    const tr = el("tr");
    tr.append(el("td", p.name), el("td", p.address), el("td", ago(p.last_seen)), el("td", p.items, "num"));
    return tr;
  }));
}

function renderLog(snap) {
  $("log").replaceChildren(...snap.log.map((r) => el("li",
    `${new Date(r.ts * 1000).toLocaleTimeString()} ${r.direction === "up" ? "sent" : "got"} ${r.name || r.content_id.slice(0, 12)} #${r.chunk} ${r.direction === "up" ? "to" : "from"} ${r.peer}: ${r.result} (${size(r.bytes)})`)));
}

function render(snap) {
  last = snap;
  const s = snap.status;
  $("me").textContent = `${s.name} · ${s.address}:${s.port} · ${s.peers} peer(s) · sharing ${s.items}`;
  if (document.activeElement !== $("folder")) $("folder").value = snap.settings.downloads_dir;
  renderNetwork(snap);
  renderDownloads(snap);
  renderShares(snap);
  renderPeers(snap);
  renderLog(snap);
}

function connect() {
  const events = new EventSource("/api/events");
  events.onmessage = (e) => render(JSON.parse(e.data));
  events.onerror = () => { $("me").textContent = "reconnecting to the local swarmshare daemon…"; };
}

document.addEventListener("DOMContentLoaded", () => {
  $("filter").addEventListener("input", () => last && renderNetwork(last));
  $("save-folder").addEventListener("click", async () => {
    try { await api("POST", "settings", { downloads_dir: $("folder").value }); $("share-msg").textContent = "Download folder saved."; }
    catch (e) { $("share-msg").textContent = e.message; }
  });
  $("share-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const path = $("share-path").value.trim();
    $("share-msg").textContent = `Sharing ${path}…`;
    try {
      const [result] = await api("POST", "share", { paths: [path] });
      $("share-msg").textContent = result.error ? result.error : `Shared ${result.name}.`;
      if (!result.error) $("share-path").value = "";
    } catch (err) { $("share-msg").textContent = err.message; }
  });
  connect();
});
