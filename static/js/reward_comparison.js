/* DPO vs reward model under shift: accuracy per split, one bar per side. */
(function () {
  "use strict";
  const data = document.getElementById("comparison-bars");
  if (!data) { return; }
  Plotly.newPlot("comparison-chart", JSON.parse(data.textContent), {
    barmode: "group", height: 320, margin: {l: 50, r: 10, t: 20, b: 40},
    yaxis: {title: {text: "accuracy"}, range: [0, 1]}, legend: {orientation: "h"}
  }, {displaylogo: false, responsive: true});
})();
