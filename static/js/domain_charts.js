/* A domain stream's page: each method's forgetting matrix as a heatmap on one colour scale (0–1), drawn
   once the polled status card brings the finished matrices. */
(function () {
  "use strict";
  const config = {displaylogo: false, responsive: true};
  let drawn = "";

  function draw() {
    const data = document.getElementById("domain-charts");
    if (!data || data.textContent === drawn) { return; }
    drawn = data.textContent;
    const charts = JSON.parse(data.textContent);
    const waits = charts.map(function (chart) {
      const el = document.getElementById("chart-" + chart.key);
      if (!el) { return Promise.resolve(); }
      const after = chart.domains.map(function (d) { return "after " + d; });
      const text = chart.z.map(function (row) { return row.map(function (v) { return v.toFixed(2); }); });
      const trace = {
        type: "heatmap", z: chart.z, x: chart.domains, y: after, zmin: 0, zmax: 1,
        colorscale: "Viridis", text: text, texttemplate: "%{text}", hovertemplate: "%{x} %{y}: %{z:.3f}<extra></extra>"
      };
      const layout = {
        title: {text: chart.title, font: {size: 14}}, height: 260, margin: {l: 70, r: 10, t: 30, b: 45},
        xaxis: {title: {text: "held-out accuracy of"}}, yaxis: {autorange: "reversed"}
      };
      return Plotly.react(el, [trace], layout, config);
    });
    Promise.all(waits).then(function () {
      document.getElementById("domain-chart-grid").dataset.drawn = String(charts.length);
    });
  }

  draw();
  document.body.addEventListener("htmx:afterSwap", draw);
})();
