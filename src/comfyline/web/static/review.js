// Review: arrows move, P approves, X rejects, U undoes, R re-rolls (after a confirm: Enter
// confirms, Esc cancels). Each decision is posted at once and saved in the order's ledger; a
// re-roll is posted, the order runs, and the order's event stream says when the new image is made.
"use strict";

const root = document.querySelector(".review");
const grid = document.getElementById("grid");
const tiles = [...grid.querySelectorAll(".tile")];
const data = JSON.parse(document.getElementById("review-data").textContent);
const msg = document.getElementById("review-msg");
const key = root.dataset.key;
const history = []; // {index, before}: what U puts back
const confirmBox = document.getElementById("reroll-confirm");
const rerolling = new Map(); // slot index -> its tile, until the new image is made
let asking = null; // the tile a re-roll confirm is open for
let events = null; // the order's event stream, open while images are re-rolled
let current = 0;

// Image URLs carry the file's version (?v=): a re-rolled image never shows the cached old one.
function url(kind, index, version) {
  return `/o/${key}/${kind}/${index}/0${version ? `?v=${version}` : ""}`;
}

function select(i) {
  if (!tiles.length) return;
  current = Math.max(0, Math.min(tiles.length - 1, i));
  tiles.forEach((t, n) => t.setAttribute("aria-selected", n === current ? "true" : "false"));
  const tile = tiles[current];
  tile.scrollIntoView({ block: "nearest" });
  grid.setAttribute("aria-activedescendant", tile.id);
  for (const input of document.querySelectorAll('.loupe input[name="image"]')) input.value = tile.dataset.index;
  showLoupe(tile);
}

function showLoupe(tile) {
  const index = tile.dataset.index;
  document.getElementById("loupe-img").src = url("image", index, tile.dataset.v);
  const flags = tile.dataset.flags ? `checks: ${tile.dataset.flags}` : "checks: passed";
  const decision = rerolling.has(Number(index)) ? "re-rolling" : tile.dataset.decision || "not reviewed";
  const title = tile.dataset.title ? ` · “${tile.dataset.title}”` : "";
  document.getElementById("loupe-info").textContent =
    `image ${index} · seed ${tile.dataset.seed}${title} · ${flags} · ${decision}`;
  const box = document.getElementById("same-motif");
  box.innerHTML = "";
  const group = data.groups[tile.dataset.motif] || [];
  if (group.length > 1) {
    const label = document.createElement("p");
    label.className = "small";
    label.textContent = `near-duplicates (motif ${tile.dataset.motif}):`;
    box.append(label);
    for (const other of group) {
      const img = document.createElement("img");
      img.src = url("thumb", other, document.getElementById(`i${other}`)?.dataset.v);
      img.alt = `image ${other}`;
      img.title = `image ${other}`;
      if (String(other) === index) img.className = "this";
      box.append(img);
    }
  }
}

function columns() {
  const top = tiles[0]?.offsetTop;
  const n = tiles.findIndex((t) => t.offsetTop !== top);
  return n > 0 ? n : tiles.length;
}

async function decide(tile, decision, remember = true) {
  const before = tile.dataset.decision || null;
  const reply = await fetch(`/o/${key}/review/decide`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ images: [Number(tile.dataset.index)], decision }),
  });
  const body = await reply.json();
  if (!reply.ok) { say(body.error, true); return; }
  if (remember) history.push({ index: tiles.indexOf(tile), before });
  tile.dataset.decision = decision || "";
  tile.className = tile.className.replace(/\bd-\w+/, `d-${decision || "none"}`);
  const badge = tile.querySelector(".badge");
  badge.textContent = tile.dataset.index + (decision === "approved" ? " ✓" : decision === "rejected" ? " ✗" : "");
  recount();
  msg.className = "small";
  msg.textContent = `image ${tile.dataset.index}: ${decision || "decision undone"} (saved)`;
  if (tiles[current] === tile) showLoupe(tile);
}

function recount() {
  // The counts of this page's tiles (a page holds all of a small order's images).
  const count = (d) => tiles.filter((t) => t.dataset.decision === d).length;
  const before = { approved: Number(document.getElementById("n-approved").dataset.base), rejected: Number(document.getElementById("n-rejected").dataset.base) };
  document.getElementById("n-approved").textContent = before.approved + count("approved");
  document.getElementById("n-rejected").textContent = before.rejected + count("rejected");
}

async function undo() {
  const last = history.pop();
  if (last) { select(last.index); await decide(tiles[last.index], last.before, false); return; }
  if (tiles[current]?.dataset.decision) await decide(tiles[current], null, false);
}

function say(text, problem = false) {
  msg.className = problem ? "problem" : "small";
  msg.textContent = text;
}

function askReroll() {
  const tile = tiles[current];
  if (!tile) return;
  if (rerolling.has(Number(tile.dataset.index))) { say(`image ${tile.dataset.index} is being re-rolled`); return; }
  asking = tile;
  say("");
  document.getElementById("reroll-question").textContent =
    `Re-roll image ${tile.dataset.index}? Its file moves to rerolled/ and the order runs to make a new one with another seed.`;
  confirmBox.hidden = false;
  document.getElementById("reroll-yes").focus();
}

function closeConfirm() {
  const tile = asking;
  asking = null;
  confirmBox.hidden = true;
  grid.focus();
  return tile;
}

async function reroll() {
  const tile = closeConfirm();
  if (!tile) return;
  const index = Number(tile.dataset.index);
  say(`image ${index}: re-rolling…`);
  const reply = await fetch(`/o/${key}/review/reroll`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ image: index }),
  });
  const body = await reply.json().catch(() => ({ error: `the server answered ${reply.status}` }));
  if (!reply.ok) { say(body.error, true); return; }
  rerolling.set(index, tile);
  tile.classList.add("rerolling");
  tile.dataset.seed = body.new_seed;
  tile.dataset.decision = ""; // a re-rolled image is reviewed again
  tile.className = tile.className.replace(/\bd-\w+/, "d-none");
  tile.querySelector(".badge").textContent = `${index}`;
  recount();
  say(body.message);
  if (tiles[current] === tile) showLoupe(tile);
  if (!events) {
    events = new EventSource(`/o/${key}/events?after=${body.after}`);
    events.addEventListener("images", (e) => made(JSON.parse(e.data)));
    events.addEventListener("log", (e) => {
      for (const line of JSON.parse(e.data)) if (line.level === "error") say(line.text, true);
    });
  }
}

function made(list) {
  // [index, files, versions] of each image made since the re-roll.
  for (const [index, files, versions] of list) {
    const tile = rerolling.get(index);
    if (!tile || !files) continue;
    rerolling.delete(index);
    tile.dataset.v = versions[0];
    tile.querySelector("img").src = url("thumb", index, versions[0]);
    tile.classList.remove("rerolling");
    say(`image ${index}: re-rolled, new seed ${tile.dataset.seed}`);
    if (tiles[current] === tile) showLoupe(tile);
  }
  if (!rerolling.size && events) { events.close(); events = null; }
}

document.addEventListener("keydown", (e) => {
  if (asking) {
    // The confirm is open: Enter re-rolls, Esc cancels, other keys do nothing meanwhile.
    if (e.key === "Enter") { e.preventDefault(); reroll(); }
    else if (e.key === "Escape") { e.preventDefault(); closeConfirm(); say("re-roll cancelled"); }
    else if (e.key !== "Tab") e.preventDefault();
    return;
  }
  if (e.target.closest("input, textarea, select") || e.ctrlKey || e.metaKey || e.altKey) return;
  const k = e.key.toLowerCase();
  const moves = { arrowleft: -1, arrowright: 1, arrowup: -columns(), arrowdown: columns() };
  if (k in moves) { e.preventDefault(); select(current + moves[k]); return; }
  if (!tiles.length) return;
  if (k === "p") decide(tiles[current], "approved");
  else if (k === "x") decide(tiles[current], "rejected");
  else if (k === "u") undo();
  else if (k === "r") { e.preventDefault(); askReroll(); }
});
tiles.forEach((tile, n) => tile.addEventListener("click", () => { if (asking) closeConfirm(); select(n); grid.focus(); }));
for (const button of document.querySelectorAll("[data-decide]")) {
  button.addEventListener("click", (e) => { e.preventDefault(); decide(tiles[current], button.dataset.decide); });
}
document.getElementById("undo").addEventListener("click", undo);
document.getElementById("reroll").addEventListener("click", askReroll);
document.getElementById("reroll-yes").addEventListener("click", reroll);
document.getElementById("reroll-no").addEventListener("click", () => { closeConfirm(); say("re-roll cancelled"); });
for (const d of ["approved", "rejected"]) {
  // Decisions on other pages: the total less what this page's tiles hold.
  const el = document.getElementById(`n-${d}`);
  if (el) el.dataset.base = Number(el.textContent) - tiles.filter((t) => t.dataset.decision === d).length;
}
const fromHash = tiles.findIndex((t) => `#${t.id}` === location.hash);
select(fromHash >= 0 ? fromHash : 0);
grid.focus();
