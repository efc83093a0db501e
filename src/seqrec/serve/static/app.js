// The seqrec page: a user's history and live recommendations; clicking an item posts an event.
"use strict";

const $ = (id) => document.getElementById(id);
let currentUser = null;

async function api(path, options = {}) {
  const res = await fetch(path, options);
  let body = null;
  try { body = await res.json(); } catch (e) { /* not JSON */ }
  if (!res.ok) {
    const detail = body && body.detail ? body.detail : res.statusText;
    throw new Error(`${res.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
  }
  return body;
}

function setStatus(text, isError = false) {
  const s = $("status");
  s.textContent = text;
  s.className = isError ? "error" : "muted";
}

function itemLabel(item) {
  return item.title ? item.title : `item ${item.item_id}`;
}

function renderHistory(history) {
  const list = $("history-list");
  list.replaceChildren();
  for (const ev of history.events) {
    const li = document.createElement("li");
    li.textContent = itemLabel(ev);
    li.dataset.itemId = String(ev.item_id);
    if (ev.source === "live") li.className = "live";
    const id = document.createElement("span");
    id.className = "id";
    id.textContent = `#${ev.item_id}`;
    li.append(id);
    list.append(li);
  }
  list.scrollTop = list.scrollHeight;
  $("history-count").textContent = `(${history.events.length} events${history.forgotten ? ", forgotten user" : ""})`;
}

function renderRecs(recs) {
  const list = $("recs-list");
  list.replaceChildren();
  for (const item of recs.items) {
    const li = document.createElement("li");
    li.dataset.itemId = String(item.item_id);
    const button = document.createElement("button");
    button.type = "button";
    button.className = "add";
    button.textContent = itemLabel(item);
    button.title = "record this item as the user's next event";
    button.addEventListener("click", () => addEvent(item.item_id));
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = item.score.toFixed(3);
    li.append(button, score);
    list.append(li);
  }
  $("recs-version").textContent = `(model ${recs.model_version})`;
}

async function showUser(user) {
  const k = $("k-select").value;
  const u = encodeURIComponent(user);
  setStatus(`loading user ${user}…`);
  try {
    const [history, recs] = await Promise.all([
      api(`/users/${u}/history`),
      api(`/users/${u}/recommendations?k=${k}`),
    ]);
    currentUser = user;
    renderHistory(history);
    renderRecs(recs);
    setStatus(`user ${history.user_id}: ${history.events.length} events, ${recs.items.length} recommendations`);
  } catch (e) {
    setStatus(e.message, true);
  }
}

async function addEvent(itemId) {
  if (currentUser === null) { setStatus("pick a user first", true); return; }
  const key = $("api-key").value;
  sessionStorage.setItem("seqrec-api-key", key);
  const headers = { "Content-Type": "application/json" };
  if (key) headers["X-API-Key"] = key;
  try {
    await api("/events", {
      method: "POST", headers,
      body: JSON.stringify({ user_id: currentUser, item_id: itemId, event_type: "click" }),
    });
  } catch (e) {
    setStatus(`event not recorded: ${e.message}`, true);
    return;
  }
  await showUser(currentUser);
}

async function init() {
  $("api-key").value = sessionStorage.getItem("seqrec-api-key") || "";
  $("user-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const user = $("user-input").value.trim();
    if (user) showUser(user);
  });
  $("add-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const item = $("add-item").value.trim();
    if (item) addEvent(item).then(() => { $("add-item").value = ""; });
  });
  try {
    const health = await api("/health");
    const m = health.model;
    $("model-info").textContent = `${m.model}, ${m.items} items, ${m.index.kind} top-k, version ${m.version}`;
    const users = await api("/users?limit=50");
    const list = $("user-list");
    for (const u of users.users) {
      const opt = document.createElement("option");
      opt.value = String(u.user_id);
      if (u.live) opt.label = "live";
      list.append(opt);
    }
  } catch (e) {
    setStatus(e.message, true);
  }
  document.body.dataset.ready = "1";
}

init();
