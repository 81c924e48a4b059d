// swarmshare's page: one live snapshot from the daemon over server-sent events, rendered with
// textContent only (names come from other peers and are never parsed as HTML), characters
// that could mislead (controls, bidi overrides, zero-width characters) shown escaped.
"use strict";

const $ = (id) => document.getElementById(id);
let last = null;
let folderEdited = false; // the folder field holds a typed value not saved yet
const MISLEADING = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}]/gu;
const LOGIN_HELP = "Not logged in: run `swarmshare open` on this computer to open this page logged in.";

function shown(text) {
  return String(text).replace(MISLEADING, (c) => {
    const code = c.codePointAt(0);
    if (code < 0x100) return `\\x${code.toString(16).padStart(2, "0")}`;
    return code < 0x10000 ? `\\u${code.toString(16).padStart(4, "0")}` : `\\U${code.toString(16).padStart(8, "0")}`;
  });
}

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
  if (text !== undefined) node.textContent = shown(text);
  if (cls) node.className = cls;
  return node;
}

function button(label, name, onClick, secondary) {
  const b = el("button", label, secondary ? "secondary" : "");
  b.type = "button";
  b.setAttribute("aria-label", `${label} ${shown(name)}`);
  b.addEventListener("click", onClick);
  return b;
}

// An action's button with its message beside it: errors show where the user clicked, and
// stay there (kept by action and item) when the next snapshot redraws the row.
const failures = new Map();

function action(label, name, key, run, secondary) {
  const id = `${label}:${key}`;
  const box = el("span", undefined, "action");
  const msg = el("span", shown(failures.get(id) || ""), "msg error");
  msg.setAttribute("role", "status");
  msg.dataset.action = id;
  // The row may be redrawn while the request runs: write to whichever message is shown now.
  const show = (text) => {
    for (const node of document.querySelectorAll(".msg[data-action]")) {
      if (node.dataset.action === id) node.textContent = shown(text);
    }
  };
  box.append(button(label, name, async () => {
    failures.delete(id);
    show("");
    try { await run(); }
    catch (e) { failures.set(id, `${label} failed: ${e.message}`); show(failures.get(id)); }
  }, secondary), msg);
  return box;
}

function say(node, text, isError) {
  node.textContent = shown(text);
  node.classList.toggle("error", Boolean(isError));
}

async function saveFolder() {
  const data = await api("POST", "settings", { downloads_dir: $("folder").value });
  folderEdited = false;
  $("folder").value = data.downloads_dir;
  say($("folder-msg"), "Download folder saved.");
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
    tr.append(el("td", item.name), el("td", item.id.slice(0, 12), "id"), el("td", size(item.size), "num"), el("td", item.peers, "num wide"));
    const state = el("td");
    if (item.legacy) state.append(el("span", "original scripts, unverified", "tag warn"));
    else state.append(el("span", item.complete ? "complete" : "partial", "tag"));
    if (item.here) state.append(" ", el("span", "here", "tag"));
    const act = el("td");
    act.append(action("Download", item.name, item.id, async () => {
      if (folderEdited) await saveFolder(); // a typed folder is used, never silently ignored
      await api("POST", "downloads", { ref: item.id.startsWith("seed:") ? item.name : item.id });
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
    const finished = d.state === "done";
    // A finished download: its average rate and the peers that served it, not the live ones.
    const rate = finished ? d.done_bytes / Math.max(d.seconds, 1e-6) : d.rate;
    const peers = finished ? Object.keys(d.by_peer || {}).length : d.peers_in_use;
    li.append(el("div", `${size(d.done_bytes)} of ${size(d.total_bytes)} · ${size(Math.round(rate))}/s${finished ? " on average" : ""}${eta} · ${peers} peer(s)${finished ? " served" : ""} · ${d.retried} retried`, "meta"));
    if (d.state === "done") li.append(el("div", d.dest, "path"));
    if (d.error) li.append(el("div", d.error, "meta"));
    const row = el("div", undefined, "row");
    const running = !["done", "failed", "cancelled", "paused"].includes(d.state);
    if (running) row.append(action("Pause", d.name, d.id, () => api("POST", `downloads/${d.id}/pause`), true));
    if (["paused", "failed"].includes(d.state)) row.append(action("Resume", d.name, d.id, () => api("POST", `downloads/${d.id}/resume`), true));
    if (d.state !== "done" && !d.id.startsWith("seed:")) row.append(action("Cancel", d.name, d.id, () => api("POST", `downloads/${d.id}/cancel`), true));
    li.append(row);
    return li;
  }));
  $("downloads-empty").hidden = snap.downloads.length > 0;
}

function renderShares(snap) {
  fill($("shares").tBodies[0], snap.library.map((r) => {
    const tr = el("tr");
    tr.append(el("td", r.name), el("td", r.id.slice(0, 12), "id"), el("td", size(r.size), "num"), el("td", r.path, "path wide"));
    const act = el("td");
    act.append(action("Stop sharing", r.name, r.id, () => api("POST", "unshare", { ref: r.id }), true));
    tr.append(act);
    return tr;
  }));
}

function renderPeers(snap) {
  fill($("peers").tBodies[0], snap.peers.map((p) => {
    const tr = el("tr");
    tr.append(el("td", p.name), el("td", p.address), el("td", ago(p.last_seen), "wide"), el("td", p.items, "num"));
    return tr;
  }));
}

function renderLog(snap) {
  $("log").replaceChildren(...snap.log.map((r) => el("li",
    `${new Date(r.ts * 1000).toLocaleTimeString()} ${r.direction === "up" ? "sent" : "got"} ${r.name || r.content_id.slice(0, 12)} #${r.chunk} ${r.direction === "up" ? "to" : "from"} ${r.peer}: ${r.result} (${size(r.bytes)})`)));
}

function renderInbox(snap) {
  const offers = snap.inbox || [];
  $("inbox-section").hidden = offers.length === 0;
  $("inbox").replaceChildren(...offers.map((o) => {
    const li = el("li");
    const names = o.files.slice(0, 3).map((f) => f.name).join(", ") + (o.files.length > 3 ? ` and ${o.files.length - 3} more` : "");
    li.append(el("p", `${o.from} (${o.address}) offers ${o.files.length} file(s), ${size(o.size)}: ${names}`));
    li.append(action("Accept", o.from, o.id, () => api("POST", `inbox/${o.id}/accept`)),
      action("Refuse", o.from, o.id, () => api("POST", `inbox/${o.id}/refuse`), true));
    return li;
  }));
}

let lanShown = null; // the LAN page address the QR code shows

function renderLan(s) {
  $("compare-code").textContent = shown(s.compare_code || "?");
  $("compare-code").title = s.fingerprint ? `SHA-256 ${s.fingerprint}` : "";
  $("lan-tls").textContent = s.tls
    ? "Private swarm: all traffic between peers is encrypted (TLS); browsers get no page."
    : "Open swarm: peers and browsers on this network talk plain HTTP (not encrypted).";
  const page = $("lan-page");
  if (s.lan_page === lanShown) return;
  lanShown = s.lan_page;
  if (!s.lan_page) {
    page.textContent = "No LAN page.";
    $("lan-qr").hidden = true;
    return;
  }
  const link = el("a", s.lan_page);
  link.href = s.lan_page;
  page.replaceChildren(el("span", "Any device on this network can download what you share at "), link);
  $("lan-qr").src = `/api/lan-page-qr.svg?u=${encodeURIComponent(s.lan_page)}`;
  $("lan-qr").hidden = false;
}

function render(snap) {
  last = snap;
  const s = snap.status;
  $("me").textContent = shown(`${s.name} · ${s.address}:${s.port} · ${s.peers} peer(s) · sharing ${s.items}`);
  if (!folderEdited && document.activeElement !== $("folder")) $("folder").value = snap.settings.downloads_dir;
  renderInbox(snap);
  renderNetwork(snap);
  renderDownloads(snap);
  renderShares(snap);
  renderPeers(snap);
  renderLog(snap);
  renderLan(s);
}

function connect() {
  const events = new EventSource("/api/events");
  events.onmessage = (e) => render(JSON.parse(e.data));
  events.onerror = async () => {
    $("me").textContent = "reconnecting to the local swarmshare daemon…";
    // EventSource does not say why it failed: ask once whether this page is logged in.
    const reply = await fetch("/api/status", { credentials: "same-origin" }).catch(() => null);
    if (reply && reply.status === 401) {
      events.close();
      $("me").textContent = LOGIN_HELP;
      $("me").classList.add("error");
    }
  };
}

document.addEventListener("DOMContentLoaded", () => {
  $("filter").addEventListener("input", () => last && renderNetwork(last));
  $("folder").addEventListener("input", () => {
    folderEdited = $("folder").value !== (last ? last.settings.downloads_dir : "");
    say($("folder-msg"), folderEdited ? "Not saved yet: Save, or Download saves it." : "");
  });
  $("save-folder").addEventListener("click", async () => {
    try { await saveFolder(); }
    catch (e) { say($("folder-msg"), `Save failed: ${e.message}`, true); }
  });
  $("share-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const path = $("share-path").value.trim();
    $("share-msg").textContent = `Sharing ${path}…`;
    try {
      const [result] = await api("POST", "share", { paths: [path] });
      say($("share-msg"), result.error ? result.error : `Shared ${result.name}.`, result.error);
      if (!result.error) $("share-path").value = "";
    } catch (err) { say($("share-msg"), err.message, true); }
  });
  connect();
});
