/* A PPO/RTO job's evaluation: the reward-model score distribution of the base and trained policies. */
(function () {
  "use strict";
  const data = document.getElementById("score-histogram");
  if (!data) { return; }
  const el = document.getElementById("score-histogram-chart");
  Plotly.newPlot(el, JSON.parse(data.textContent), {
    barmode: "overlay", height: 320, margin: {l: 50, r: 10, t: 20, b: 40},
    xaxis: {title: {text: "reward-model score"}}, yaxis: {title: {text: "held-out prompts"}},
    legend: {orientation: "h"}
  }, {displaylogo: false, responsive: true}).then(function () { el.dataset.drawn = "true"; });
})();
