// comfyline dashboard: live updates over server-sent events, no framework, no build step.
// Every page works without this file (forms post and redirect); it only keeps pages fresh.
"use strict";

const PAGE_IMAGES = 120;
const CHART_MAX = 2000;

function listen(url, handlers) {
  const source = new EventSource(url);
  for (const [name, handle] of Object.entries(handlers)) {
    source.addEventListener(name, (e) => handle(JSON.parse(e.data)));
  }
  source.onopen = () => document.body.classList.remove("offline");
  source.onerror = () => document.body.classList.add("offline"); // EventSource retries itself
  return source;
}

function linePage() {
  const body = document.getElementById("line-body");
  listen(body.dataset.stream, { rows: (d) => { body.innerHTML = d.html; } });
}

function orderPage() {
  const status = document.getElementById("status");
  const key = status.dataset.key;
  const firstPage = status.dataset.pageNo === "0";
  const chart = JSON.parse(document.getElementById("chart-data").textContent);
  drawChart(chart);
  listen(status.dataset.stream, {
    status: (d) => { status.innerHTML = d.html; },
    images: (list) => { if (firstPage) addThumbs(key, list); },
    log: (lines) => addLog(lines),
    readings: (points) => {
      chart.push(...points);
      if (chart.length > CHART_MAX) chart.splice(0, chart.length - CHART_MAX);
      drawChart(chart);
    },
  });
}

function addThumbs(key, list) {
  const box = document.getElementById("thumbs");
  document.getElementById("thumbs-empty")?.remove();
  for (const [index, files, versions] of list) {
    for (let n = 0; n < files; n++) {
      // A re-rolled image replaces its old thumbnail; ?v= names the new file's version.
      box.querySelector(`.thumb[data-index="${index}"][data-n="${n}"]`)?.remove();
      const v = `?v=${versions[n]}`;
      const a = document.createElement("a");
      a.className = "thumb";
      a.href = `/o/${key}/image/${index}/${n}${v}`;
      a.dataset.index = index;
      a.dataset.n = n;
      const img = document.createElement("img");
      img.src = `/o/${key}/thumb/${index}/${n}${v}`;
      img.loading = "lazy";
      img.width = img.height = 128;
      img.alt = `image ${index}`;
      a.append(img);
      box.prepend(a);
    }
  }
  while (box.children.length > PAGE_IMAGES) box.lastElementChild.remove();
}

function addLog(lines) {
  const log = document.getElementById("log");
  document.getElementById("log-empty")?.remove();
  for (const line of lines) {
    const li = document.createElement("li");
    li.className = `lv-${line.level}`;
    const time = document.createElement("time");
    time.textContent = line.at;
    li.append(time, ` ${line.text}`);
    log.prepend(li);
  }
  while (log.children.length > 200) log.lastElementChild.remove();
}

function drawChart(points) {
  const svg = document.getElementById("chart");
  const caption = document.getElementById("chart-caption");
  const line = svg.querySelector(".line");
  const grid = svg.querySelector(".grid");
  if (!points.length) return;
  const temps = points.map((p) => p[1]);
  const lo = Math.min(30, ...temps), hi = Math.max(90, ...temps);
  const t0 = points[0][0], tn = points[points.length - 1][0];
  const t1 = tn > t0 ? tn : t0 + 1; // the whole run spans the chart's width
  const x = (t) => ((t - t0) / (t1 - t0)) * 600;
  const y = (c) => 180 - ((c - lo) / (hi - lo)) * 180;
  line.setAttribute("points", points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" "));
  grid.innerHTML = [40, 60, 78].map((c) =>
    `<line x1="0" x2="600" y1="${y(c)}" y2="${y(c)}" class="${c === 78 ? "target" : ""}"></line>`).join("");
  const last = temps[temps.length - 1], max = Math.max(...temps);
  caption.textContent = `now ${last.toFixed(0)} °C, highest ${max.toFixed(0)} °C (line at 78 °C: the guard's target), ${points.length} readings`;
}

function newOrderPage() {
  const type = document.getElementById("f-type");
  const show = () => {
    for (const box of document.querySelectorAll(".for-type")) {
      box.hidden = box.dataset.type !== type.value;
    }
  };
  type.addEventListener("change", show);
  show();
}

const page = document.body.dataset.page;
if (page === "line") linePage();
if (page === "order") orderPage();
if (page === "new") newOrderPage();
