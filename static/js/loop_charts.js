/* A loop's page: held-out figures across rounds (round 0 = the starting policy) and each round's pairs,
   redrawn whenever the polled status card brings new data. Single points get markers, so round 0 alone
   is visible. */
(function () {
  "use strict";
  const layout = function (title, yTitle) {
    return {
      title: {text: title, font: {size: 14}}, height: 260, margin: {l: 55, r: 15, t: 35, b: 40},
      xaxis: {title: {text: "round"}, dtick: 1, rangemode: "tozero"},
      yaxis: {title: {text: yTitle || ""}}, showlegend: false
    };
  };
  const config = {displaylogo: false, responsive: true};
  let drawn = "";

  function draw() {
    const data = document.getElementById("loop-charts");
    if (!data || data.textContent === drawn) { return; }
    drawn = data.textContent;
    const parsed = JSON.parse(data.textContent);
    const waits = parsed.charts.map(function (chart) {
      const el = document.getElementById("chart-" + chart.key);
      if (!el) { return Promise.resolve(); }
      const trace = {x: chart.x, y: chart.y, type: "scatter", mode: "lines+markers", marker: {size: 8}};
      return Plotly.react(el, [trace], layout(chart.title), config);
    });
    const labelling = parsed.labelling;
    const el = document.getElementById("chart-labelling");
    if (el) {
      const traces = [{x: labelling.x, y: labelling.pairs, type: "bar", name: "pairs"}];
      if (labelling.acceptance.some(function (v) { return v !== null; })) {
        traces.push({x: labelling.x, y: labelling.acceptance, type: "scatter", mode: "lines+markers",
                     name: "RSO acceptance rate", yaxis: "y2", marker: {size: 8}});
      }
      if (labelling.consistency.some(function (v) { return v !== null; })) {
        traces.push({x: labelling.x, y: labelling.consistency, type: "scatter", mode: "lines+markers",
                     name: "CREAM consistency C", yaxis: "y2", marker: {size: 8}});
      }
      [["agreement", "annotators' agreement α"], ["flip_rate", "estimated flip rate"]].forEach(function (pair) {
        const values = labelling[pair[0]];
        if (values.some(function (v) { return v !== null; })) {
          traces.push({x: labelling.x, y: values, type: "scatter", mode: "lines+markers",
                       name: pair[1], yaxis: "y2", marker: {size: 8}});
        }
      });
      const lay = layout("Pairs the labeller made", "pairs");
      lay.yaxis2 = {overlaying: "y", side: "right", range: [-0.1, 1], title: {text: "rate / C / α"}};
      lay.showlegend = traces.length > 1;
      waits.push(Plotly.react(el, traces, lay, config));
    }
    Promise.all(waits).then(function () {
      document.getElementById("loop-chart-grid").dataset.drawn = String(parsed.charts[0].x.length);
    });
  }

  draw();
  document.body.addEventListener("htmx:afterSwap", draw);
})();
