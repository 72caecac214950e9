// The dashboard: reads the project's own API with the visitor's session and draws
// one chart per KPI, the latest interval's top-N and the completeness of recent intervals.
"use strict";

(function () {
  const config = JSON.parse(document.getElementById("dashboard-config").textContent);
  const MINUTE = 60 * 1000;
  const STEP = { 1: 5 * MINUTE, 2: 60 * MINUTE };
  const SLOTS = 48;
  // Beyond this many distinct keys a chart shows one line per rank instead of per key.
  const MAX_SERIES = 8;
  const COLORS = ["#2463eb", "#e8590c", "#12b76a", "#9e33d6", "#d92d20", "#0e9384", "#ca8504", "#475467"];

  const $ = (id) => document.getElementById(id);
  const fromInput = $("range-from");
  const toInput = $("range-to");
  const intervalSelect = $("range-interval");
  let loads = 0;

  // Times are typed and shown as "2021-07-18 13:05" (UTC, 24-hour), as on the axes: a
  // datetime-local input would follow the browser's locale ("01:05 PM").
  const TIME_TYPED = /^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2})$/;
  const toInputValue = (ms) => new Date(ms).toISOString().slice(0, 16).replace("T", " ");
  function fromInputValue(value) {
    const parts = TIME_TYPED.exec(value.trim());
    if (!parts) return NaN;
    const [year, month, day, hour, minute] = parts.slice(1).map(Number);
    const ms = Date.UTC(year, month - 1, day, hour, minute);
    // Date.UTC rolls 2021-02-30 over into March: such a date is refused, not moved.
    return toInputValue(ms) === `${parts[1]}-${parts[2]}-${parts[3]} ${parts[4]}:${parts[5]}` ? ms : NaN;
  }
  const isoZ = (ms) => new Date(ms).toISOString().replace(".000Z", "Z");

  function formatTime(ms, spanMs) {
    const iso = new Date(ms).toISOString();
    return spanMs > 24 * 60 * MINUTE ? iso.slice(5, 16).replace("T", " ") : iso.slice(11, 16);
  }

  function formatValue(value, field) {
    if (!field.includes("bytes")) return Number(value).toLocaleString("en");
    const units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let scaled = Number(value);
    let unit = 0;
    while (scaled >= 1000 && unit < units.length - 1) {
      scaled /= 1000;
      unit += 1;
    }
    return `${scaled.toFixed(scaled < 10 && unit ? 1 : 0)} ${units[unit]}`;
  }

  const keyLabel = (field) => field.replace(/_id$/, "");

  // Round tick steps, so that the time axis reads 00:00, 00:30, 01:00 rather than 23:53.
  function tickStep(spanMs) {
    const steps = [5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080].map((m) => m * MINUTE);
    return steps.find((step) => spanMs / step <= 12) || steps[steps.length - 1];
  }

  function setState(state, message, isError) {
    document.body.dataset.state = state;
    $("status").textContent = message || "";
    $("status").classList.toggle("error", Boolean(isError));
  }

  async function getJson(url, params) {
    const response = await fetch(`${url}?${new URLSearchParams(params)}`, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const detail = body.detail || Object.entries(body).map(([k, v]) => `${k}: ${v}`).join("; ");
      throw new Error(`${response.status} ${detail || response.statusText}`);
    }
    return body;
  }

  // Each row is a level held over its whole interval, a segment from its start to its end:
  // the last hour reaches the end of the range, and a service in the top-N only once is a
  // short line, not a lone dot. A key that leaves the top-N and comes back leaves a gap.
  function seriesOf(rows, kpi) {
    const byKey = new Set(rows.map((row) => row[kpi.key])).size <= MAX_SERIES;
    const groups = new Map();
    let previousStart = null;
    let rank = 0;
    for (const row of rows) {
      rank = row.interval_start_timestamp === previousStart ? rank + 1 : 1;
      previousStart = row.interval_start_timestamp;
      const label = byKey ? `${keyLabel(kpi.key)} ${row[kpi.key]}` : `top ${rank}`;
      const sortKey = byKey ? row[kpi.key] : rank;
      if (!groups.has(label)) groups.set(label, { sortKey, points: [] });
      const points = groups.get(label).points;
      const start = Date.parse(row.interval_start_timestamp);
      const end = Date.parse(row.interval_end_timestamp);
      const last = points[points.length - 1];
      if (last && last.x < start) points.push({ x: (last.x + start) / 2, y: null });
      const level = { y: row[kpi.value], key: row[kpi.key], start, end };
      points.push({ ...level, x: start, edge: "start" }, { ...level, x: end, edge: "end" });
    }
    return [...groups.entries()]
      .sort((a, b) => a[1].sortKey - b[1].sortKey)
      .map(([label, group], index) => ({
        label,
        data: group.points,
        borderColor: COLORS[index % COLORS.length],
        backgroundColor: COLORS[index % COLORS.length],
        borderWidth: 2,
        pointRadius: 0,
        pointHoverRadius: 4,
        pointHitRadius: 6,
        spanGaps: false,
      }));
  }

  function drawChart(kpi, rows, from, to) {
    const span = to - from;
    const canvas = $(`chart-kpi-${kpi.id}`);
    const previous = Chart.getChart(canvas);
    if (previous) previous.destroy();
    $(`no-rows-kpi-${kpi.id}`).hidden = rows.length > 0;
    canvas.parentElement.hidden = rows.length === 0;
    if (!rows.length) return;
    new Chart(canvas, {
      type: "line",
      data: { datasets: seriesOf(rows, kpi) },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        interaction: { mode: "nearest", intersect: false },
        scales: {
          x: {
            type: "linear",
            min: from,
            max: to,
            ticks: { stepSize: tickStep(span), callback: (value) => formatTime(value, span) },
          },
          y: { beginAtZero: true, ticks: { callback: (value) => formatValue(value, kpi.value) } },
        },
        plugins: {
          legend: { position: "bottom" },
          tooltip: {
            callbacks: {
              title: (items) => `${formatTime(items[0].raw.start, 0)}–${formatTime(items[0].raw.end, 0)}`,
              label: (item) =>
                `${keyLabel(kpi.key)} ${item.raw.key}: ${formatValue(item.raw.y, kpi.value)}`,
            },
          },
        },
      },
    });
  }

  function drawLatest(rowsByKpi) {
    const container = $("latest");
    container.replaceChildren();
    let latest = null;
    for (const rows of rowsByKpi.values()) {
      for (const row of rows) {
        if (latest === null || row.interval_start_timestamp > latest) latest = row.interval_start_timestamp;
      }
    }
    $("latest-when").textContent = latest ? `Interval starting ${latest.replace("T", " ")}` : "No rows in this range.";
    if (!latest) return;
    for (const kpi of config.kpis) {
      const table = document.createElement("table");
      table.id = `latest-kpi-${kpi.id}`;
      table.createCaption().textContent = kpi.name;
      const head = table.createTHead().insertRow();
      for (const title of ["#", keyLabel(kpi.key), kpi.value.replaceAll("_", " ")]) {
        const th = document.createElement("th");
        th.textContent = title;
        head.appendChild(th);
      }
      const body = table.createTBody();
      rowsByKpi
        .get(kpi.id)
        .filter((row) => row.interval_start_timestamp === latest)
        .forEach((row, index) => {
          const tr = body.insertRow();
          for (const text of [index + 1, row[kpi.key], formatValue(row[kpi.value], kpi.value)]) {
            tr.insertCell().textContent = text;
          }
        });
      container.appendChild(table);
    }
  }

  function drawCompleteness(entries, from, to, interval) {
    const step = STEP[interval];
    const byStart = new Map(entries.map((entry) => [Date.parse(entry.interval_start_timestamp), entry]));
    const first = Math.ceil(from / step) * step;
    const slots = Math.max(0, Math.floor((to - first) / step));
    const complete = entries.filter((entry) => entry.complete).length;
    const late = entries.filter((entry) => entry.files_too_late > 0).length;
    $("completeness-summary").textContent =
      `${complete} of ${entries.length} processed ${interval === 1 ? "intervals" : "hours"} complete; ` +
      `${Math.max(0, slots - entries.length)} of ${slots} without files` +
      (late ? `; ${late} with files too late (counted nowhere until restated).` : ".");
    const strip = $("completeness");
    strip.replaceChildren();
    for (let start = Math.max(first, first + (slots - SLOTS) * step); start + step <= to; start += step) {
      const entry = byStart.get(start);
      const slot = document.createElement("span");
      const state = !entry
        ? "absent"
        : entry.files_too_late > 0
          ? "late"
          : entry.complete
            ? "complete"
            : "incomplete";
      slot.className = `slot ${state}`;
      slot.title = entry
        ? `${isoZ(start)}: ${entry.complete ? "complete" : "incomplete"}, ${entry.files_counted} file(s) counted, ` +
          `${entry.files_failed} failed, ${entry.files_too_late} too late, ${entry.rows_accepted} rows` +
          (interval === 2 ? `, ${entry.intervals_processed}/12 intervals` : "") +
          (entry.restatable ? "" : "; final (late files are not merged)")
        : `${isoZ(start)}: no files`;
      strip.appendChild(slot);
    }
  }

  async function load() {
    const from = fromInputValue(fromInput.value);
    const to = fromInputValue(toInput.value);
    const interval = Number(intervalSelect.value);
    if (Number.isNaN(from) || Number.isNaN(to)) {
      setState("error", "Write times as YYYY-MM-DD HH:MM, UTC and 24-hour, e.g. 2021-07-18 13:05.", true);
      return;
    }
    if (!(from < to)) {
      setState("error", "Pick a start before the end.", true);
      return;
    }
    setState("loading", "Loading…");
    const params = {
      interval,
      interval_start_timestamp__gte: isoZ(from),
      interval_end_timestamp__lte: isoZ(to),
    };
    try {
      const [entries, ...rowLists] = await Promise.all([
        getJson(config.intervalsUrl, params),
        ...config.kpis.map((kpi) => getJson(kpi.url, params)),
      ]);
      const rowsByKpi = new Map(config.kpis.map((kpi, index) => [kpi.id, rowLists[index]]));
      config.kpis.forEach((kpi) => drawChart(kpi, rowsByKpi.get(kpi.id), from, to));
      drawLatest(rowsByKpi);
      drawCompleteness(entries, from, to, interval);
      const total = rowLists.reduce((sum, rows) => sum + rows.length, 0);
      loads += 1;
      document.body.dataset.loads = String(loads);
      setState("ready", total ? "" : "No KPI rows in this range: widen it or pick the other interval type.");
    } catch (error) {
      setState("error", `Could not load the data: ${error.message}`, true);
    }
  }

  function setRange(hours) {
    const to = fromInputValue(toInput.value);
    if (!Number.isNaN(to)) fromInput.value = toInputValue(to - hours * 60 * MINUTE);
    load();
  }

  if (!config.latestEnd) {
    $("content").hidden = true;
    $("range").hidden = true;
    $("empty").hidden = false;
    setState("empty", "");
    return;
  }
  const latestEnd = Date.parse(config.latestEnd);
  toInput.value = toInputValue(latestEnd);
  // The last six hours, or less when there is less data.
  fromInput.value = toInputValue(Math.max(Date.parse(config.earliestStart), latestEnd - 6 * 60 * MINUTE));
  $("range").addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  intervalSelect.addEventListener("change", load);
  for (const button of document.querySelectorAll("[data-hours]")) {
    button.addEventListener("click", () => setRange(Number(button.dataset.hours)));
  }
  load();
})();
