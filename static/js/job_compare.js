/* Compare runs: one metric of several jobs overlaid. */
(function () {
  "use strict";
  const traces = JSON.parse(document.getElementById("compare-traces").textContent);
  const metric = document.getElementById("compare-metric");
  Plotly.newPlot("compare-chart", traces, {
    title: {text: metric ? metric.value : ""}, height: 420, margin: {l: 50, r: 10, t: 40, b: 40},
    xaxis: {title: {text: "step"}}, legend: {orientation: "h"}
  }, {displaylogo: false, responsive: true});
})();
