// Studio's page script: the live loss chart (uPlot, fed by /events/train) and the side-by-side Talk replies.
"use strict";

let chart = null;

function drawChart(run) {
  const box = document.getElementById("train-chart");
  if (!box || !run || !run.loss) return;
  // One x axis for both series: every step that has a train or an eval loss; null where a series has none.
  const steps = [...new Set([...run.loss, ...run.eval_loss].map((p) => p[0]))].sort((a, b) => a - b);
  const pick = (points) => { const m = new Map(points); return steps.map((s) => (m.has(s) ? m.get(s) : null)); };
  const data = [steps, pick(run.loss), pick(run.eval_loss)];
  box.dataset.points = String(run.loss.length + run.eval_loss.length);
  box.dataset.step = String(run.step);
  box.dataset.run = run.run;
  if (chart) { chart.setData(data); return; }
  const body = document.body.dataset;
  chart = new uPlot({
    width: Math.min(900, box.clientWidth || 900), height: 260,
    scales: { x: { time: false } },
    series: [{ label: "step" },
      { label: body.loss, stroke: "#1f77b4", spanGaps: true },
      { label: body.evalLoss, stroke: "#d62728", spanGaps: true, points: { show: true, size: 6 } }],
  }, data, box);
}

function watchTraining() {
  const source = new EventSource("/events/train");
  source.onmessage = (message) => drawChart(JSON.parse(message.data));
}

function streamReply(pane, message) {
  pane.textContent = "";
  pane.classList.add("streaming");
  const url = "/talk/stream?which=" + pane.dataset.which + "&message=" + encodeURIComponent(message);
  return new Promise((done) => {
    const source = new EventSource(url);
    source.addEventListener("piece", (e) => { pane.textContent += JSON.parse(e.data); });
    const finish = (e) => {
      if (e && e.type === "fail") pane.textContent += "\n[" + JSON.parse(e.data) + "]";
      source.close(); pane.classList.remove("streaming"); pane.dataset.done = "1"; done();
    };
    source.addEventListener("end", finish);
    source.addEventListener("fail", finish);
    source.onerror = () => finish(null);
  });
}

document.addEventListener("submit", async (event) => {
  if (event.target.id !== "talk-form") return;
  event.preventDefault();
  const message = document.getElementById("talk-message").value.trim();
  if (!message) return;
  // One after the other: the server runs one reply at a time anyway, and the base is shown first.
  for (const pane of document.querySelectorAll(".reply")) { pane.dataset.done = ""; }
  for (const pane of document.querySelectorAll(".reply")) { await streamReply(pane, message); }
});

watchTraining();
