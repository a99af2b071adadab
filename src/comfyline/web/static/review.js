// Review: arrows move, P approves, X rejects, U undoes, R re-roll (not available yet).
// Each decision is posted at once and saved in the order's ledger.
"use strict";

const root = document.querySelector(".review");
const grid = document.getElementById("grid");
const tiles = [...grid.querySelectorAll(".tile")];
const data = JSON.parse(document.getElementById("review-data").textContent);
const msg = document.getElementById("review-msg");
const key = root.dataset.key;
const history = []; // {index, before}: what U puts back
let current = 0;

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
  document.getElementById("loupe-img").src = `/o/${key}/image/${index}/0`;
  const flags = tile.dataset.flags ? `checks: ${tile.dataset.flags}` : "checks: passed";
  const decision = tile.dataset.decision || "not reviewed";
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
      img.src = `/o/${key}/thumb/${other}/0`;
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
  if (!reply.ok) { msg.textContent = body.error; msg.className = "problem"; return; }
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

function reroll() {
  msg.className = "note";
  msg.textContent = data.reroll;
}

document.addEventListener("keydown", (e) => {
  if (e.target.closest("input, textarea, select") || e.ctrlKey || e.metaKey || e.altKey) return;
  const k = e.key.toLowerCase();
  const moves = { arrowleft: -1, arrowright: 1, arrowup: -columns(), arrowdown: columns() };
  if (k in moves) { e.preventDefault(); select(current + moves[k]); return; }
  if (!tiles.length) return;
  if (k === "p") decide(tiles[current], "approved");
  else if (k === "x") decide(tiles[current], "rejected");
  else if (k === "u") undo();
  else if (k === "r") reroll();
});
tiles.forEach((tile, n) => tile.addEventListener("click", () => { select(n); grid.focus(); }));
for (const button of document.querySelectorAll("[data-decide]")) {
  button.addEventListener("click", (e) => { e.preventDefault(); decide(tiles[current], button.dataset.decide); });
}
document.getElementById("undo").addEventListener("click", undo);
document.getElementById("reroll").addEventListener("click", reroll);
for (const d of ["approved", "rejected"]) {
  // Decisions on other pages: the total less what this page's tiles hold.
  const el = document.getElementById(`n-${d}`);
  if (el) el.dataset.base = Number(el.textContent) - tiles.filter((t) => t.dataset.decision === d).length;
}
const fromHash = tiles.findIndex((t) => `#${t.id}` === location.hash);
select(fromHash >= 0 ? fromHash : 0);
grid.focus();
