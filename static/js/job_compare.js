/* Compare runs: one metric of several jobs overlaid; for PPO vs DPO runs, counterpart panels. */
(function () {
  "use strict";
  const traces = JSON.parse(document.getElementById("compare-traces").textContent);
  const metric = document.getElementById("compare-metric");
  Plotly.newPlot("compare-chart", traces, {
    title: {text: metric ? metric.value : ""}, height: 420, margin: {l: 50, r: 10, t: 40, b: 40},
    xaxis: {title: {text: "step"}}, legend: {orientation: "h"}
  }, {displaylogo: false, responsive: true});
  const panels = document.getElementById("counterpart-panels");
  if (!panels) { return; }
  JSON.parse(panels.textContent).forEach(function (panel) {
    if (!panel.traces.length) { return; }
    Plotly.newPlot("counterpart-" + panel.id, panel.traces, Object.assign({
      height: 360, margin: {l: 60, r: 60, t: 20, b: 40},
      xaxis: {title: {text: "step"}}, legend: {orientation: "h"}
    }, panel.layout), {displaylogo: false, responsive: true});
  });
})();
