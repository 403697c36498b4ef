// A run's page follows the run: a chart per numeric series of its metrics (a held-out
// `eval_x` drawn beside its `x`), the progress bar with its ETA and the latest values,
// drawn as SVG from the metrics in the page and then from the run's WebSocket
// (webapp/runs/consumers.py), never by polling. Names and values only ever reach the
// page as text. A run that ends reloads the page for its final record and buttons.
(() => {
  "use strict";
  const curves = document.getElementById("curves");
  if (!curves) return;
  const SVG = "http://www.w3.org/2000/svg";
  const WIDTH = 360, HEIGHT = 170, LEFT = 56, RIGHT = 8, TOP = 8, BOTTOM = 22;
  const ENDED = ["finished", "failed", "stopped"];
  const statusLabel = document.getElementById("run-status");
  const live = document.getElementById("live-status");
  const steps = Number(curves.dataset.steps);
  const started = Number(curves.dataset.started || 0);
  const points = new Map(); // step -> record with its `time`; a step logged again replaces it
  for (const point of JSON.parse(document.getElementById("run-points").textContent)) {
    points.set(point.step, point);
  }
  let status = curves.dataset.status, drawing = false, wait = 1000;

  const isNumber = (value) => typeof value === "number" && Number.isFinite(value);
  const significant = (value) => Number(value.toPrecision(4)).toString();

  function duration(seconds) { // as the runs_format `duration` filter writes it
    const s = Math.round(seconds);
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60), h = Math.floor(m / 60);
    if (m < 60) return `${m} min ${String(s % 60).padStart(2, "0")} s`;
    return `${h} h ${String(m % 60).padStart(2, "0")} min`;
  }

  function element(name, attributes = {}, text = "") {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
    node.textContent = text;
    return node;
  }

  function sorted() {
    return [...points.values()].sort((a, b) => a.step - b.step);
  }

  // Chart name -> its series' names: `eval_x` goes with `x`.
  function groups(records) {
    const charts = new Map();
    for (const record of records) {
      for (const [key, value] of Object.entries(record)) {
        if (key === "step" || key === "time" || !isNumber(value)) continue;
        const chart = key.startsWith("eval_") ? key.slice(5) : key;
        if (!charts.has(chart)) charts.set(chart, new Set());
        charts.get(chart).add(key);
      }
    }
    return charts;
  }

  function chart(name, series, records) {
    const lines = [...series].sort((a, b) => a.startsWith("eval_") - b.startsWith("eval_"));
    const data = lines.map((key) => records.filter((r) => isNumber(r[key])).map((r) => [r.step, r[key]]));
    const all = data.flat();
    const [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
    let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
    if (y0 === y1) [y0, y1] = [y0 - 1, y1 + 1];
    const x = (step) => LEFT + (x1 === x0 ? 0 : (step - x0) / (x1 - x0)) * (WIDTH - LEFT - RIGHT);
    const y = (value) => TOP + (1 - (value - y0) / (y1 - y0)) * (HEIGHT - TOP - BOTTOM);

    const svg = element("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img" });
    svg.append(element("title", {}, name));
    const bottom = HEIGHT - BOTTOM;
    svg.append(element("path", { class: "axis", d: `M${LEFT} ${TOP}V${bottom}H${WIDTH - RIGHT}` }));
    svg.append(element("text", { x: LEFT - 4, y: TOP + 8, "text-anchor": "end" }, significant(y1)));
    svg.append(element("text", { x: LEFT - 4, y: bottom, "text-anchor": "end" }, significant(y0)));
    svg.append(element("text", { x: LEFT, y: HEIGHT - 6 }, `step ${x0}`));
    svg.append(element("text", { x: WIDTH - RIGHT, y: HEIGHT - 6, "text-anchor": "end" }, `step ${x1}`));
    data.forEach((line, i) => {
      const coordinates = line.map(([step, value]) => `${x(step)},${y(value)}`).join(" ");
      svg.append(element("polyline", { class: `series-${i}`, points: coordinates }));
      if (line.length < 40) {
        for (const [step, value] of line) {
          svg.append(element("circle", { class: `series-${i}`, cx: x(step), cy: y(value), r: 2.5 }));
        }
      }
    });

    const figure = document.createElement("figure");
    figure.className = "chart";
    const heading = document.createElement("h3");
    heading.textContent = name;
    const legend = document.createElement("div");
    legend.className = "legend";
    lines.forEach((key, i) => {
      const label = document.createElement("span");
      label.className = `series-${i}`;
      const last = data[i][data[i].length - 1];
      label.textContent = `${key} ${last ? significant(last[1]) : ""}`;
      legend.append(label);
    });
    figure.append(heading, svg, legend);
    return figure;
  }

  function latestTable(records) {
    const latest = new Map();
    for (const record of records) {
      for (const [key, value] of Object.entries(record)) {
        if (key !== "step" && key !== "time" && isNumber(value)) latest.set(key, value);
      }
    }
    const rows = [...latest].map(([key, value]) => {
      const row = document.createElement("tr");
      const name = document.createElement("th");
      const cell = document.createElement("td");
      name.textContent = key;
      cell.textContent = significant(value);
      row.append(name, cell);
      return row;
    });
    if (rows.length) document.querySelector("#latest tbody").replaceChildren(...rows);
  }

  // Seconds left at the pace of the steps logged since the run last started, as
  // the page's view computes it.
  function eta(records) {
    const since = records.filter((r) => r.time >= started);
    if (status !== "running" || since.length < 2) return "";
    const first = since[0], last = since[since.length - 1];
    if (last.step === first.step) return "";
    const pace = (last.time - first.time) / (last.step - first.step);
    return `· about ${duration(Math.max(steps - last.step, 0) * pace)} left`;
  }

  function draw() {
    drawing = false;
    const records = sorted();
    if (!records.length) return;
    const charts = [...groups(records)].map(([name, series]) => chart(name, series, records));
    curves.replaceChildren(...charts);
    latestTable(records);
    const step = records[records.length - 1].step;
    document.getElementById("run-progress").value = step;
    document.getElementById("run-step").textContent = `step ${step} of ${steps}`;
    document.getElementById("run-eta").textContent = eta(records);
  }

  function redraw() {
    if (!drawing) {
      drawing = true;
      requestAnimationFrame(draw);
    }
  }

  function receive(message) {
    if (message.type === "metrics") {
      points.set(message.record.step, { ...message.record, time: message.time });
      redraw();
    } else if (message.type === "status" && message.status !== status) {
      if (ENDED.includes(message.status)) location.reload();
      status = message.status;
      statusLabel.textContent = status[0].toUpperCase() + status.slice(1);
      statusLabel.className = `status ${status}`;
      redraw();
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}${curves.dataset.socket}`);
    socket.addEventListener("open", () => {
      wait = 1000;
      live.classList.add("on");
      live.textContent = "live";
    });
    socket.addEventListener("message", (event) => receive(JSON.parse(event.data)));
    socket.addEventListener("close", () => {
      live.classList.remove("on");
      live.textContent = "reconnecting…";
      setTimeout(connect, wait);
      wait = Math.min(wait * 2, 30000);
    });
  }

  draw();
  if (!ENDED.includes(status)) connect();
})();
