// The live page: every REFRESH_MS, fetch /api/answers (report.answers(), as `report --json` prints it) and
// redraw in place. No reload, no state of its own: the results are the only source.
"use strict";

const REFRESH_MS = 2000;
const COLORS = ["#3b6ea8", "#e07b39", "#3f9e5a", "#c44e52", "#8172b2"];
const WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const charts = {};
let refreshes = 0;

const $ = (id) => document.getElementById(id);
const whole = (n) => (n == null ? "–" : Math.round(n).toLocaleString("en-US"));
const compact = (n) => (n < 1000 ? String(n) : `${(n / 1000).toFixed(n < 10000 ? 1 : 0)}k`);  // fits a heat map cell
const seconds = (n) => (n == null ? "–" : `${n.toFixed(n < 10 ? 2 : 1)} s`);

function cell(text, className) {
  const td = document.createElement("td");
  td.className = className;
  td.textContent = text;
  return td;
}

function barCell(fraction) {
  const td = cell("", "bar");
  const bar = document.createElement("div");
  bar.style.width = `${Math.max(0, Math.min(1, fraction)) * 100}%`;
  td.append(bar);
  return td;
}

// A ranking table: rank | name | bar | count (or code | description | bar | count for dispositions).
function fillRanking(id, items, first, second, count) {
  const body = $(id).tBodies[0];
  if (!items.length) {
    const empty = document.createElement("tr");
    empty.append(cell("no calls yet", "empty"));
    body.replaceChildren(empty);
    return;
  }
  const max = Math.max(1, ...items.map(count));
  body.replaceChildren(...items.map((item, i) => {
    const tr = document.createElement("tr");
    const label = second(item);
    tr.append(cell(first(item, i), "rank"), cell(label.text, `name ${label.className || ""}`),
              barCell(count(item) / max), cell(whole(count(item)), "count"));
    return tr;
  }));
}

function fillWindow(prefix, window) {
  $(`${prefix}-span`).textContent = window ? `${window.start} to ${window.end.slice(11)}` : "(none yet)";
  const state = $(`${prefix}-state`);
  if (state) {
    state.textContent = window ? (window.final ? "final" : "open") : "";
    state.className = `badge ${window ? (window.final ? "final" : "open") : ""}`;
  }
  fillRanking(prefix, window ? window.top_crime_types : [], (_, i) => i + 1,
              (r) => ({text: r.crime_type}), (r) => r.count);
}

function drawHeatmap(matrix) {
  const table = $("heatmap");
  $("heatmap-note").hidden = matrix !== null;
  table.hidden = matrix === null;
  if (matrix === null) {
    $("heatmap-note").textContent = "Not available: this run's windows slide by more than an hour, so its " +
      "counts do not say the hour of each call.";
    return;
  }
  const max = Math.max(1, ...matrix.flat());
  const head = document.createElement("tr");
  head.append(cell("", "corner"), ...Array.from({length: 24}, (_, h) => cell(String(h).padStart(2, "0"), "hour")));
  const rows = matrix.map((hours, d) => {
    const tr = document.createElement("tr");
    tr.append(cell(WEEKDAYS[d], "weekday"), ...hours.map((n, h) => {
      const td = cell(n ? compact(n) : "", "n");
      const level = n / max;
      td.style.background = n ? `hsl(212, 60%, ${94 - level * 62}%)` : "#f6f7f9";
      td.style.color = level > 0.55 ? "#fff" : "#1d2733";
      td.dataset.count = n;
      td.title = `${WEEKDAYS[d]} ${String(h).padStart(2, "0")}:00-${String(h + 1).padStart(2, "0")}:00: ${whole(n)} calls`;
      return td;
    }));
    return tr;
  });
  const thead = document.createElement("thead");
  thead.append(head);
  const tbody = document.createElement("tbody");
  tbody.append(...rows);
  table.replaceChildren(thead, tbody);
}

function drawChart(id, type, labels, datasets, yTitle) {
  if (!charts[id]) {
    charts[id] = new Chart($(id), {
      type, data: {labels, datasets},
      options: {animation: false, responsive: true, maintainAspectRatio: false,
                interaction: {mode: "index", intersect: false},
                plugins: {legend: {labels: {boxWidth: 12, font: {size: 11}}}},
                scales: {x: {ticks: {font: {size: 10}, maxRotation: 0, autoSkip: true}},
                         y: {beginAtZero: true, title: {display: Boolean(yTitle), text: yTitle}}}},
    });
    return;
  }
  const chart = charts[id];
  chart.data.labels = labels;
  datasets.forEach((d, i) => {  // keep the dataset objects, so a series the user hid stays hidden
    if (chart.data.datasets[i] && chart.data.datasets[i].label === d.label) {
      chart.data.datasets[i].data = d.data;
    } else {
      chart.data.datasets[i] = d;
    }
  });
  chart.data.datasets.length = datasets.length;
  chart.update("none");
}

const series = (label, data, i, extra = {}) =>
  ({label, data, borderColor: COLORS[i % COLORS.length], backgroundColor: COLORS[i % COLORS.length],
    borderWidth: 2, pointRadius: 1.5, ...extra});

function drawJob(pipeline) {
  const job = $("job");
  const last = pipeline.last_batch_written_at
    ? new Date(pipeline.last_batch_written_at * 1000).toLocaleTimeString("en-GB") : "none yet";
  job.dataset.state = pipeline.job;
  job.textContent = {
    running: `Job running: live, refreshed every ${REFRESH_MS / 1000} s (last batch written ${last})`,
    stopped: `Job stopped: the results it wrote (last batch written ${last})`,
    unknown: `Job state unknown (no Spark UI recorded): the results so far (last batch written ${last})`,
  }[pipeline.job];
  const health = pipeline.health || {status: "ok"};
  if (pipeline.job === "running" && health.status !== "ok") {  // stalled or without its broker: say so first
    job.dataset.state = "unhealthy";
    job.textContent = `Job ${health.status}: ${health.reason}`;
  }
  const ui = $("spark-ui");
  if (pipeline.spark_ui_url && pipeline.job === "running") {
    const link = document.createElement("a");
    link.href = pipeline.spark_ui_url;
    link.textContent = pipeline.spark_ui_url;
    link.target = "_blank";
    ui.replaceChildren(link);
  } else {
    ui.textContent = pipeline.spark_ui_url ? `${pipeline.spark_ui_url} (closed with the job)` : "–";
  }
}

function drawHealth(batches) {
  // Spark also runs batches with no data (to move the watermark on): the latest one with data says more
  const withData = batches.filter((b) => b.input_rows > 0);
  const last = withData[withData.length - 1] || {};
  $("health-batch").textContent = last.batch_id == null ? "" : `(batch ${last.batch_id})`;
  $("health-input-rps").textContent = whole(last.input_rps);
  $("health-processed-rps").textContent = whole(last.processed_rps);
  $("health-duration").textContent = seconds(last.duration_ms == null ? null : last.duration_ms / 1000);
  $("health-backlog").textContent = whole(last.backlog);
  // a batch of duplicates only counts no call, so it has no latency: the latest batch that had one
  const timed = batches.filter((b) => b.latency_mean_s != null);
  const latest = timed[timed.length - 1] || {};
  $("health-latency").textContent = `${seconds(latest.latency_mean_s)} / ${seconds(latest.latency_max_s)}`;
  $("health-latency-batch").textContent = latest.batch_id == null ? "" : `(batch ${latest.batch_id})`;
  const labels = batches.map((b) => `#${b.batch_id}`);
  const pick = (key, scale = 1) => batches.map((b) => (b[key] == null ? null : b[key] * scale));
  drawChart("chart-rates", "line", labels,
            [series("input rows/s", pick("input_rps"), 0), series("processed rows/s", pick("processed_rps"), 1)]);
  drawChart("chart-times", "line", labels,
            [series("batch duration", pick("duration_ms", 0.001), 0), series("latency, mean", pick("latency_mean_s"), 2),
             series("latency, oldest call", pick("latency_max_s"), 3)], "seconds");
  drawChart("chart-backlog", "bar", labels,
            [series("backlog", pick("backlog"), 0), series("late", pick("late"), 3), series("malformed", pick("malformed"), 4)],
            "rows");
}

// Each partition's own watermark: which one holds the job's back, which are idle (stream/watermarks.py).
function drawPartitions(pipeline) {
  $("idle-timeout").textContent = pipeline.idle_timeout_s == null ? "idle timeout unknown"
    : `a partition with nothing unread and no new message for ${pipeline.idle_timeout_s} s is idle`;
  const body = $("partitions").tBodies[0];
  if (!pipeline.partitions.length) {
    const empty = document.createElement("tr");
    empty.append(cell("no batch yet", "empty"));
    body.replaceChildren(empty);
    return;
  }
  body.replaceChildren(...pipeline.partitions.map((p) => {
    const tr = document.createElement("tr");
    const state = p.idle ? "idle" : p.holds_watermark ? "holds the watermark" : "active";
    tr.dataset.state = p.idle ? "idle" : p.holds_watermark ? "holds" : "active";
    tr.append(cell(String(p.partition), "rank"), cell(p.event_time || "none yet", "name"), cell(whole(p.read_to), "count"),
              cell(whole(p.end_offset), "count"), cell(whole(p.unread), "count"), cell(state, "state"));
    return tr;
  }));
}

function draw(a) {
  const loss = a.data_loss || {messages: 0, ranges: []};
  $("data-loss").hidden = !loss.messages;
  $("data-loss").textContent = loss.messages ? `Not exact: Kafka's retention deleted ${whole(loss.messages)} messages `
    + `before the job read them (${loss.ranges.map((r) => `partition ${r.partition} offsets ${whole(r.from_offset)} `
    + `to ${whole(r.to_offset - 1)}`).join(", ")}); every answer is short of the calls they held.` : "";
  $("total-calls").textContent = whole(a.total_calls);
  $("batches").textContent = whole(a.batches);
  $("malformed").textContent = whole(a.malformed);
  $("late").textContent = whole(a.late);
  $("duplicates").textContent = whole(a.duplicates);
  $("event-time").textContent = a.event_time_range ? `${a.event_time_range.from} to ${a.event_time_range.to}` : "–";
  $("watermark").textContent = a.watermark || "–";
  fillWindow("current-window", a.windows.latest);
  fillWindow("last-final-window", a.windows.last_final);
  fillRanking("top-crime-types", a.top_crime_types, (_, i) => i + 1, (r) => ({text: r.crime_type}), (r) => r.count);
  const recent = a.windows.recent;
  $("recent-count").textContent = whole(recent.windows.length);
  drawChart("chart-recent", "line", recent.windows.map((w) => `${w.start.slice(5)}${w.final ? "" : " (open)"}`),
            recent.crime_types.map((name, i) => series(name, recent.windows.map((w) => w.counts[i]), i)), "calls");
  fillRanking("top-locations", a.top_locations, (_, i) => i + 1, (r) => ({text: r.address}), (r) => r.count);
  drawHeatmap(a.calls_by_weekday_hour);
  fillRanking("dispositions", a.dispositions, (r) => r.code,
              (r) => (r.description ? {text: r.description} : {text: "unknown code (not in radio_code.json)", className: "unknown"}),
              (r) => r.count);
  drawJob(a.pipeline);
  drawHealth(a.pipeline.batches);
  drawPartitions(a.pipeline);
}

function showMessage(text) {
  $("message").hidden = !text;
  $("message").textContent = text || "";
}

async function refresh() {
  try {
    const response = await fetch(`/api/answers${location.search}`, {cache: "no-store"});
    if (response.ok) {
      draw(await response.json());
      showMessage("");
    } else if (response.status === 503) {
      const body = await response.json();
      showMessage(`Waiting for the streaming job's first results: ${body.error}`);
      $("job").dataset.state = "waiting";
      $("job").textContent = "No results yet";
    } else {
      showMessage(await response.text());
    }
    $("updated").textContent = `updated ${new Date().toLocaleTimeString("en-GB")}`;
  } catch (error) {
    showMessage(`The dashboard server does not answer (${error.message}); retrying.`);
  } finally {
    refreshes += 1;
    document.body.dataset.refreshes = refreshes;
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
