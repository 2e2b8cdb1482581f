// meso dashboard: live updates from the API's event stream, actions, the journal, the charts.
// No framework, no build step: plain DOM, Chart.js for the charts.
"use strict";

(() => {
  const live = document.getElementById("live");
  const part = document.getElementById("live-part");
  const page = document.body.dataset.page;
  let refreshTimer = null;
  let wasLost = false;
  const listeners = [];

  function setLive(state, text) {
    if (!live) return;
    live.dataset.state = state;
    live.textContent = text;
  }

  async function refresh() {
    refreshTimer = null;
    if (!part) return;
    try {
      const done = await fetch(part.dataset.src, { credentials: "same-origin", cache: "no-store" });
      if (done.status === 401) { location.reload(); return; }
      if (!done.ok) return;
      part.innerHTML = await done.text();
      document.body.dataset.refreshed = String(Date.now());
    } catch (_err) { /* the event stream says when the controller is away */ }
  }

  function soon() {
    if (refreshTimer === null) refreshTimer = setTimeout(refresh, 150);
  }

  // -- the event stream: every change refreshes the page's live part --------------------------
  function connect() {
    const stream = new EventSource("/v1/events");
    stream.onopen = () => {
      if (wasLost) {
        setLive("live", "reconnected · live");
        soon();
        listeners.forEach((f) => f("reconnected"));
      } else {
        setLive("live", "live");
      }
      wasLost = false;
    };
    stream.onerror = () => {
      wasLost = true;
      setLive("lost", "connection to the controller lost · reconnecting…");
      if (stream.readyState === EventSource.CLOSED) {  // refused outright: try again ourselves
        setTimeout(connect, 2000);
      }
    };
    for (const kind of ["task", "placed", "unplaced", "host", "job", "run"]) {
      stream.addEventListener(kind, (e) => {
        soon();
        listeners.forEach((f) => f(kind, e));
      });
    }
  }
  if (live) connect();
  // what sampling shows (load, memory in use, a unit's properties) changes without events:
  // look again now and then
  if (part) setInterval(soon, page === "jobs" ? 10000 : 3000);

  // -- actions on a job: confirmation first, then the API (the cookie, same origin) -----------
  const actions = document.querySelector(".actions[data-job]");
  const dialog = document.getElementById("confirm");
  function confirmFirst(text) {
    return new Promise((resolve) => {
      document.getElementById("confirm-text").textContent = text;
      dialog.returnValue = "";
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.showModal();
    });
  }
  async function act(method, path, body) {
    const result = document.getElementById("action-result");
    result.textContent = "…";
    try {
      const done = await fetch(path, {
        method, credentials: "same-origin",
        headers: body ? { "Content-Type": "application/json" } : {},
        body: body ? JSON.stringify(body) : undefined,
      });
      const data = await done.json().catch(() => ({}));
      if (!done.ok) {
        result.textContent = `refused: ${data.error || done.status}`;
        result.className = "error";
        return null;
      }
      result.className = "";
      soon();
      return data;
    } catch (err) {
      result.textContent = `failed: ${err}`;
      result.className = "error";
      return null;
    }
  }
  if (actions) {
    const job = actions.dataset.job;
    const path = `/v1/jobs/${encodeURIComponent(job)}`;
    document.getElementById("kill").addEventListener("click", async () => {
      if (!(await confirmFirst(`Kill job ${job}? Its tasks are stopped and nothing is restarted.`))) return;
      const data = await act("DELETE", path);
      if (data) document.getElementById("action-result").textContent =
        `killed: ${data.stopped.length} unit(s) stopped`;
    });
    document.getElementById("scale-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const task = document.getElementById("scale-task").value;
      const count = Number(document.getElementById("scale-count").value);
      if (!(await confirmFirst(`Scale ${job}/${task} to ${count} instance(s)?`))) return;
      const data = await act("POST", `${path}/scale`, { task, count });
      if (data) document.getElementById("action-result").textContent =
        `${job}/${task}: scaled to ${count}`;
    });
  }

  // -- a task's journal, followed (its last lines, then what it prints, as it prints it) ------
  const log = document.getElementById("log");
  let logAbort = null;
  async function followLog() {
    if (logAbort) logAbort.abort();
    const abort = logAbort = new AbortController();
    const state = document.getElementById("log-state");
    let first = true;
    try {
      const done = await fetch(log.dataset.src, { credentials: "same-origin", signal: abort.signal });
      if (!done.ok) {
        const data = await done.json().catch(() => ({}));
        state.textContent = `(${data.error || done.status})`;
      } else {
        state.textContent = "(following)";
        const reader = done.body.getReader();
        const decoder = new TextDecoder();
        for (;;) {
          const { value, done: end } = await reader.read();
          if (end) break;
          const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
          if (first) { log.textContent = ""; first = false; }
          log.textContent += decoder.decode(value, { stream: true });
          if (atBottom) log.scrollTop = log.scrollHeight;
        }
        state.textContent = "(the stream ended: following again)";
      }
    } catch (err) {
      if (abort.signal.aborted) return;
      state.textContent = "(the stream was cut: following again)";
    }
    if (!abort.signal.aborted) setTimeout(() => { if (logAbort === abort) followLog(); }, 2000);
  }
  if (log) {
    followLog();
    listeners.push((kind) => { if (kind === "reconnected") followLog(); });
  }

  // -- the sharing charts --------------------------------------------------------------------------
  if (page === "sharing" && window.Chart) {
    const css = getComputedStyle(document.documentElement);
    const colours = [...Array(8).keys()].map((i) => css.getPropertyValue(`--fw${i}`).trim());
    const dashes = [[], [8, 3], [2, 2], [10, 3, 2, 3], [4, 4], [1, 3], [12, 4], [6, 2, 1, 2]];
    const points = ["circle", "rect", "triangle", "rectRot", "star", "crossRot", "cross", "dash"];
    const GIB = 1 << 30;
    const charts = {};
    const clock = (t) => new Date(t * 1000).toISOString().slice(11, 19);
    const base = (yTitle, stacked, max) => ({
      animation: false, responsive: true, maintainAspectRatio: false, parsing: false,
      interaction: { mode: "nearest", axis: "x", intersect: false },
      scales: {
        x: { type: "linear", ticks: { callback: (v) => clock(v), maxTicksLimit: 6 },
             title: { display: true, text: "time (UTC)" } },
        y: { stacked, beginAtZero: true, max, title: { display: true, text: yTitle } },
      },
      plugins: { legend: { labels: { usePointStyle: true } },
                 tooltip: { callbacks: { title: (items) => items.length ? clock(items[0].parsed.x) : "" } } },
    });
    const styleOf = (names) => {
      const sorted = [...names].sort();
      return (name) => sorted.indexOf(name) % 8;
    };
    function series(history, get) {
      return history.points.map((p) => ({ x: p.time, y: get(p) }));
    }
    function draw(name, canvas, config) {
      if (charts[name]) {
        charts[name].data.datasets = config.data.datasets;
        charts[name].update("none");
      } else {
        charts[name] = new Chart(canvas, config);
      }
    }
    function resourceChart(history, names, style, key, id, scale, label) {
      const datasets = names.map((n) => ({
        label: `${n} allocated`, stack: "allocated", fill: true, borderWidth: 1,
        borderColor: colours[style(n)], backgroundColor: colours[style(n)] + "99",
        borderDash: dashes[style(n)], pointStyle: points[style(n)], pointRadius: 0,
        data: series(history, (p) => ((p.frameworks[n] || {})[key] || 0) / scale),
      }));
      datasets.push({
        label: "used (sampled)", stack: "used", borderColor: "#24292f", borderWidth: 2,
        borderDash: [6, 3], pointRadius: 0, pointStyle: "line", fill: false,
        data: series(history, (p) => p.cluster[`${key}_used`] / scale),
      });
      datasets.push({
        label: "total", stack: "total", borderColor: "#8c959f", borderWidth: 1,
        borderDash: [2, 2], pointRadius: 0, pointStyle: "line", fill: false,
        data: series(history, (p) => p.cluster[`${key}_total`] / scale),
      });
      draw(id, document.getElementById(id), { type: "line", data: { datasets }, options: base(label, true) });
    }
    function shareChart(history, name, style) {
      const id = `share-${name}`;
      let canvas = document.getElementById(id);
      if (!canvas) {
        const figure = document.createElement("figure");
        figure.dataset.framework = name;
        canvas = document.createElement("canvas");
        canvas.id = id;
        canvas.setAttribute("role", "img");
        canvas.setAttribute("aria-label", `${name}: weighted dominant share and fair share, last hour`);
        const caption = document.createElement("figcaption");
        caption.textContent = `${name}: weighted dominant share (solid) and its fair share (dashed)`;
        figure.append(canvas, caption);
        document.getElementById("share-charts").append(figure);
      }
      const datasets = [
        { label: `${name} weighted share`, borderColor: colours[style(name)], borderWidth: 2,
          backgroundColor: colours[style(name)] + "33", fill: true, pointRadius: 0,
          pointStyle: points[style(name)],
          data: series(history, (p) => (p.frameworks[name] || {}).weighted_share || 0) },
        { label: "fair share", borderColor: "#24292f", borderDash: [6, 4], borderWidth: 1.5,
          pointRadius: 0, pointStyle: "line", spanGaps: false, stepped: true,
          data: series(history, (p) => { const f = (p.frameworks[name] || {}).fair; return f == null ? null : f; }) },
      ];
      draw(id, canvas, { type: "line", data: { datasets }, options: base("weighted share", false) });
    }
    async function charts_() {
      try {
        const done = await fetch("/v1/history", { credentials: "same-origin", cache: "no-store" });
        if (!done.ok) return;
        const history = await done.json();
        const names = [...new Set(history.points.flatMap((p) => Object.keys(p.frameworks)))].sort();
        const style = styleOf(names);
        resourceChart(history, names, style, "cpus", "chart-cpus", 1, "cpus");
        resourceChart(history, names, style, "mem", "chart-mem", GIB, "GiB");
        names.forEach((n) => shareChart(history, n, style));
        document.body.dataset.charts = String(history.points.length);
      } catch (_err) { /* the event stream says when the controller is away */ }
    }
    charts_();
    setInterval(charts_, 3000);
  }
})();
