/* Live job charts: fetch the points after the cursor, extend the plotly traces, stop when the job ends. */
(function () {
  "use strict";
  const config = JSON.parse(document.getElementById("job-chart-config").textContent);
  const container = document.getElementById("charts");
  const series = {};          // metric name -> {step: [], wall: [], value: []}
  const drawn = {};           // panel id -> metric names drawn (trace 2i raw, 2i+1 smoothed)
  const ema = {};             // metric name -> {last, count} for the smoothed trace
  let cursor = 0;
  let total = 0;
  let smoothing = parseFloat(document.getElementById("smoothing").value);
  let xMode = "step";
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

  function xOf(s, i) { return xMode === "step" ? s.step[i] : new Date(s.wall[i] * 1000); }

  // A schedule is set, not measured: smoothing it would draw a learning rate the run never had.
  function unsmoothed(name) { return /(^|\/)(learning_rate|lr)$/.test(name); }

  function smoothStep(name, value) {
    const state = ema[name] || (ema[name] = {last: 0, count: 0});
    if (value === null || !isFinite(value) || unsmoothed(name)) { return value; }
    state.last = state.last * smoothing + (1 - smoothing) * value;
    state.count += 1;
    return smoothing > 0 ? state.last / (1 - Math.pow(smoothing, state.count)) : value;
  }

  function tracesFor(names) {
    const traces = [];
    names.forEach(function (name, i) {
      const s = series[name];
      const color = COLORS[i % COLORS.length];
      ema[name] = {last: 0, count: 0};
      const xs = s.step.map(function (_, k) { return xOf(s, k); });
      // few points (an eval metric, a run's first steps) get markers: a lone point draws no line
      const sparse = name.indexOf("eval/") === 0 || s.step.length < 20;
      traces.push({x: xs, y: s.value.slice(), mode: "lines", name: name + " (raw)", showlegend: false,
                   line: {color: color, width: 1}, opacity: unsmoothed(name) ? 0 : 0.25, hoverinfo: "skip"});
      traces.push({x: xs.slice(), y: s.value.map(function (v) { return smoothStep(name, v); }),
                   mode: sparse ? "lines+markers" : "lines", marker: {size: 6}, name: name,
                   line: {color: color, width: 2}});
    });
    return traces;
  }

  function drawPanel(panel) {
    const names = panel.metrics.filter(function (n) { return series[n] && series[n].step.length; });
    if (!names.length) { return; }
    const el = document.getElementById("chart-" + panel.id);
    drawn[panel.id] = names;
    const layout = {title: {text: panel.title, font: {size: 13}}, margin: {l: 50, r: 10, t: 30, b: 35},
                    height: 260, legend: {orientation: "h"}, xaxis: {title: {text: xMode === "step" ? "step" : "wall time"}}};
    // A panel redrawn with a new metric (eval/ points arrive when the job ends) is purged, not emptied by
    // hand: clearing a live plot's DOM leaves plotly a layout without its elements, and the charts
    // collapsed onto each other until a reload.
    if (el.classList.contains("js-plotly-plot")) { Plotly.purge(el); } else { el.innerHTML = ""; }
    Plotly.react(el, tracesFor(names), layout, {displaylogo: false, responsive: true});
  }

  function drawAll() { config.panels.forEach(drawPanel); }

  function extendPanel(panel, fresh) {
    const names = drawn[panel.id];
    const present = panel.metrics.filter(function (n) { return series[n] && series[n].step.length; });
    if (!names || present.length !== names.length) { drawPanel(panel); return; }
    const update = {x: [], y: []};
    const indices = [];
    names.forEach(function (name, i) {
      const pts = fresh[name] || [];
      const xs = pts.map(function (p) { return xMode === "step" ? p[0] : new Date(p[2] * 1000); });
      update.x.push(xs, xs.slice());
      update.y.push(pts.map(function (p) { return p[1]; }), pts.map(function (p) { return smoothStep(name, p[1]); }));
      indices.push(2 * i, 2 * i + 1);
    });
    Plotly.extendTraces(document.getElementById("chart-" + panel.id), update, indices);
  }

  function absorb(points) {
    Object.keys(points).forEach(function (name) {
      const s = series[name] || (series[name] = {step: [], wall: [], value: []});
      points[name].forEach(function (p) { s.step.push(p[0]); s.value.push(p[1]); s.wall.push(p[2]); total += 1; });
    });
    config.panels.forEach(function (panel) {
      if (panel.metrics.some(function (n) { return points[n] && points[n].length; })) { extendPanel(panel, points); }
    });
    container.dataset.points = String(total);
    container.dataset.lossPoints = String(series.loss ? series.loss.step.length : 0);
  }

  function poll() {
    fetch(config.metricsUrl + "?after=" + cursor, {credentials: "same-origin"})
      .then(function (response) {
        return response.json().then(function (body) { return {status: response.status, body: body}; });
      })
      .then(function (result) {
        absorb(result.body.points);
        cursor = result.body.cursor;
        if (result.status === 286) { container.dataset.done = "true"; return; }
        setTimeout(poll, result.body.more ? 0 : config.pollSeconds * 1000);
      })
      .catch(function () { setTimeout(poll, config.pollSeconds * 2000); });
  }

  document.getElementById("smoothing").addEventListener("input", function (event) {
    smoothing = parseFloat(event.target.value);
    document.getElementById("smoothing-value").textContent = smoothing.toFixed(2);
    drawAll();
  });
  document.getElementById("x-axis").addEventListener("change", function (event) {
    xMode = event.target.value;
    drawAll();
  });
  function scrollLog() {
    const log = document.getElementById("log-tail");
    if (log) { log.scrollTop = log.scrollHeight; }
  }
  document.body.addEventListener("htmx:afterSwap", scrollLog);
  scrollLog();
  poll();
})();
