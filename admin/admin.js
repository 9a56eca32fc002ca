// Admin Center: the live parts (states, log tail, cron preview, local times).
// Every page works without this script; it only adds updates through server-sent events.
// Text from the server is only ever set with textContent, never parsed as HTML, except
// the run-history fragment, which the server renders (and escapes) like any page.
"use strict";

(function () {
  const body = document.body;
  const OUTCOME_WORDS = {
    succeeded: "Succeeded", failed: "Failed", crashed: "Crashed",
    timed_out: "Timed out", cancelled: "Cancelled", interrupted: "Interrupted",
  };

  // -- times ------------------------------------------------------------------------------

  const pad = (n, w = 2) => String(n).padStart(w, "0");

  function localText(date) {
    return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
      `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  }

  function utcText(iso) {
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? iso : `${date.toISOString().slice(0, 19).replace("T", " ")} UTC`;
  }

  function relativeText(date, now) {
    const seconds = Math.round((date.getTime() - now) / 1000);
    const size = Math.abs(seconds);
    let text;
    if (size < 2) return "just now";
    if (size < 60) text = `${size} s`;
    else if (size < 3600) text = `${Math.floor(size / 60)} min ${size < 600 ? pad(size % 60) + " s" : ""}`.trim();
    else if (size < 86400) text = `${Math.floor(size / 3600)} h ${pad(Math.floor((size % 3600) / 60))} min`;
    else return localText(date);
    return seconds > 0 ? `in ${text}` : `${text} ago`;
  }

  function formatTime(el, now) {
    if (el.hasAttribute("data-keep")) return;
    const iso = el.getAttribute("datetime");
    if (!iso) return;
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return;
    if (!el.dataset.utc) el.dataset.utc = el.getAttribute("title") || "";
    if (el.classList.contains("log-time")) {
      el.textContent = `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
      el.title = `${localText(date)} (${el.dataset.utc})`;
    } else if (el.closest(".facts")) {
      el.textContent = relativeText(date, now);
      el.title = `${localText(date)} local · ${el.dataset.utc}`;
    } else {
      el.textContent = localText(date);
      el.title = el.dataset.utc;
    }
  }

  function formatTimes(root) {
    const now = Date.now();
    root.querySelectorAll("time[datetime]").forEach((el) => formatTime(el, now));
  }

  function tickRelative() {
    const now = Date.now();
    document.querySelectorAll(".facts time[datetime]").forEach((el) => formatTime(el, now));
  }

  // -- small DOM helpers ------------------------------------------------------------------

  function make(tag, className, text) {
    const el = document.createElement(tag);
    if (className) el.className = className;
    if (text !== undefined && text !== null) el.textContent = text;
    return el;
  }

  function timeElement(iso, empty) {
    if (!iso) return make("span", "none", empty || "—");
    const el = make("time", "", iso);
    el.setAttribute("datetime", iso);
    el.setAttribute("title", utcText(iso));
    return el;  // formatted once in place: how depends on where it sits
  }

  function setLive(on) {
    document.querySelectorAll("[data-live]").forEach((el) => { el.hidden = !on; });
  }

  // An EventSource that comes back after the server refused it or went away (the browser
  // itself retries only dropped connections, not refusals such as "too many streams").
  function stream(url, listeners) {
    let source = null;
    let wait = 2000;
    const open = () => {
      source = new EventSource(typeof url === "function" ? url() : url);
      source.onopen = () => { wait = 2000; setLive(true); };
      source.onerror = () => {
        setLive(false);
        if (source.readyState === EventSource.CLOSED) {
          setTimeout(open, wait + Math.random() * 1000);
          wait = Math.min(wait * 2, 60000);
        }
      };
      for (const [name, handler] of Object.entries(listeners)) {
        source.addEventListener(name, (event) => handler(event, source));
      }
    };
    open();
    window.addEventListener("pagehide", () => source && source.close());
  }

  // -- scheduler states -------------------------------------------------------------------

  function applyStatus(container, status) {
    if (container.classList.contains("card")) {
      container.dataset.state = status.state;
      container.dataset.search = `${status.name.toLowerCase()} ${status.id} ${status.state} ${status.kind}`;
    }
    container.querySelectorAll('[data-field="state"]').forEach((badge) => {
      badge.className = `badge state state-${status.state}`;
      badge.textContent = status.state.charAt(0).toUpperCase() + status.state.slice(1);
    });
    const unplanned = status.kind === "manual" ? "on demand" : "not planned";
    for (const [field, empty] of [["last_started_at"], ["last_completed_at"], ["next_planned_at", unplanned]]) {
      container.querySelectorAll(`[data-field="${field}"]`).forEach((dd) => {
        const el = timeElement(status[field], empty);
        dd.replaceChildren(el);
        if (el.tagName === "TIME") formatTime(el, Date.now());
      });
    }
    container.querySelectorAll('[data-field="last_outcome"]').forEach((dd) => {
      const outcome = status.last_outcome;
      dd.replaceChildren(outcome
        ? make("span", `outcome outcome-${outcome}`, OUTCOME_WORDS[outcome] || outcome)
        : make("span", "outcome outcome-none", "—"));
    });
    container.querySelectorAll('[data-field="last_error"]').forEach((p) => {
      p.textContent = status.last_error || "";
      p.hidden = !status.last_error;
    });
    container.querySelectorAll('[data-field="current_run_id"]').forEach((dd) => {
      dd.replaceChildren(status.current_run_id
        ? make("span", "mono", status.current_run_id.slice(0, 8))
        : make("span", "none", "—"));
    });
    container.querySelectorAll('[data-field="last_actor"]').forEach((dd) => {
      dd.textContent = status.last_actor || "—";
    });
    applyDecision(container, status);
  }

  function recount() {
    const counts = {};
    document.querySelectorAll(".card[data-state]").forEach((card) => {
      counts[card.dataset.state] = (counts[card.dataset.state] || 0) + 1;
    });
    document.querySelectorAll("[data-count]").forEach((pill) => {
      const strong = pill.querySelector("strong");
      if (strong) strong.textContent = String(counts[pill.dataset.count] || 0);
    });
  }

  let historyTimer = null;
  function refreshHistory() {
    const url = body.dataset.history;
    if (!url) return;
    clearTimeout(historyTimer);
    historyTimer = setTimeout(async () => {
      try {
        const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
        if (!response.ok) return;
        const doc = new DOMParser().parseFromString(await response.text(), "text/html");
        for (const id of ["run-chart", "run-table"]) {
          const fresh = doc.getElementById(id);
          const target = document.getElementById(id);
          if (fresh && target) {
            const node = document.importNode(fresh, true);
            formatTimes(node);
            target.replaceWith(node);
          }
        }
      } catch (_) { /* the next change tries again */ }
    }, 250);
  }

  function watchStates() {
    const url = body.dataset.events;
    if (!url || !window.EventSource) return;
    const containers = new Map();
    document.querySelectorAll("[data-id]").forEach((el) => {
      if (el === body) return;
      const list = containers.get(el.dataset.id) || [];
      list.push(el);
      containers.set(el.dataset.id, list);
    });
    const last = new Map();
    // what the page was rendered with, so a change before the stream opened is seen too
    document.querySelectorAll(".status-panel[data-id]").forEach((panel) => {
      last.set(panel.dataset.id, {
        state: panel.dataset.state,
        last_started_at: panel.dataset.started || null,
        last_completed_at: panel.dataset.completed || null,
      });
    });
    stream(url, { status: (event) => {
      let changed;
      try { changed = JSON.parse(event.data); } catch (_) { return; }
      let reload = false;
      for (const status of changed) {
        const before = last.get(status.id);
        last.set(status.id, status);
        (containers.get(status.id) || []).forEach((el) => applyStatus(el, status));
        if (before && (before.last_started_at !== status.last_started_at ||
                       before.last_completed_at !== status.last_completed_at ||
                       before.state !== status.state)) {
          reload = true;
        }
      }
      if (body.dataset.page === "overview") recount();
      if (reload) refreshHistory();
    } });
  }

  // -- log tail ---------------------------------------------------------------------------

  function logRow(record, base, showRun, previousRun) {
    const startsRun = previousRun !== record.run_id ? " run-start" : "";
    const li = make("li", `log-row level-${record.level} source-${record.source} is-new${startsRun}`);
    li.dataset.cursor = String(record.cursor);
    li.dataset.run = record.run_id;
    const time = make("time", "log-time", record.time);
    time.setAttribute("datetime", record.time);
    time.setAttribute("title", utcText(record.time));
    formatTime(time, Date.now());
    li.append(time, make("span", "log-level", record.level), make("span", "log-message", record.message));
    const keys = Object.keys(record.fields || {}).sort();
    if (keys.length) {
      const fields = make("span", "log-fields");
      for (const key of keys) {
        const value = record.fields[key];
        const field = make("span", "field");
        field.append(make("span", "field-key", key),
          make("span", "field-value", typeof value === "string" ? value : JSON.stringify(value)));
        fields.append(field);
      }
      li.append(fields);
    }
    const meta = make("span", "log-meta");
    if (record.source !== "logger") meta.append(make("span", "log-source", record.source));
    if (showRun && base) {
      const link = make("a", "log-run", record.run_id.slice(0, 8));
      link.href = `${base}?run=${encodeURIComponent(record.run_id)}`;
      link.title = "Only this run";
      meta.append(link);
    }
    li.append(meta);
    return li;
  }

  function tailLogs() {
    document.querySelectorAll("ol.log[data-tail-url]").forEach((list) => {
      if (!window.EventSource) return;
      const compact = list.classList.contains("compact");
      const keep = compact ? 300 : 3000;
      const follow = document.querySelector("[data-follow]");
      const empty = list.parentElement.querySelector("[data-log-empty]");
      const showRun = !new URL(list.dataset.tailUrl, location.href).searchParams.get("run");
      let cursor = list.dataset.after || "0";
      const url = () => {
        const next = new URL(list.dataset.tailUrl, location.href);
        next.searchParams.set("after", cursor);
        return next.pathname + next.search;
      };
      const atBottom = () => list.scrollHeight - list.scrollTop - list.clientHeight < 40;
      list.scrollTop = list.scrollHeight;
      stream(url, {
        log: (event) => {
          let records;
          try { records = JSON.parse(event.data); } catch (_) { return; }
          const stick = follow ? follow.checked : atBottom();
          const fragment = document.createDocumentFragment();
          let previousRun = list.lastElementChild ? list.lastElementChild.dataset.run : undefined;
          for (const record of records) {
            fragment.append(logRow(record, list.dataset.runBase, showRun, previousRun));
            previousRun = record.run_id;
          }
          list.append(fragment);
          if (records.length) cursor = String(records[records.length - 1].cursor);
          while (list.children.length > keep) list.firstElementChild.remove();
          if (empty) empty.hidden = true;
          if (stick) list.scrollTop = list.scrollHeight;
        },
        problem: (event, source) => {
          source.close();
          setLive(false);
          try {
            const problem = JSON.parse(event.data);
            list.append(make("li", "log-row level-error", problem.message));
          } catch (_) { /* nothing to show */ }
        },
      });
      if (follow) follow.addEventListener("change", () => { if (follow.checked) list.scrollTop = list.scrollHeight; });
    });
  }

  // -- cron preview -----------------------------------------------------------------------

  function previewCron() {
    const box = document.querySelector("[data-preview]");
    if (!box) return;
    const form = box.closest(".settings-form");
    const list = box.querySelector("[data-preview-list]");
    const error = box.querySelector("[data-preview-error]");
    let timer = null;
    let asked = 0;
    const update = () => {
      clearTimeout(timer);
      timer = setTimeout(async () => {
        const cron = form.querySelector('[name="cron"]');
        const zone = form.querySelector('[name="timezone"]');
        const url = new URL(box.dataset.preview, location.href);
        url.searchParams.set("cron", cron ? cron.value : "");
        url.searchParams.set("timezone", zone ? zone.value : "");
        const mine = ++asked;
        try {
          const response = await fetch(url.pathname + url.search, { credentials: "same-origin" });
          if (!response.ok || mine !== asked) return;
          const data = await response.json();
          error.hidden = !data.error;
          error.textContent = data.error ? data.error.message : "";
          list.replaceChildren(...data.times.map((t) => {
            const li = make("li");
            const time = make("time", "", t.text);
            time.setAttribute("datetime", t.iso);
            time.setAttribute("data-keep", "");
            li.append(time);
            return li;
          }));
        } catch (_) { /* keep the last preview */ }
      }, 300);
    };
    form.querySelectorAll("[data-preview-input]").forEach((input) => input.addEventListener("input", update));
  }

  // -- card filter ------------------------------------------------------------------------

  function filterCards() {
    const input = document.querySelector("[data-filter]");
    if (!input) return;
    const items = () => document.querySelectorAll(input.dataset.filter);
    input.addEventListener("input", () => {
      const terms = input.value.toLowerCase().split(/\s+/).filter(Boolean);
      items().forEach((el) => {
        const text = el.dataset.search || "";
        el.hidden = !terms.every((t) => text.includes(t));
      });
    });
  }

  /* actions */
  // Stop, Pause and Disable ask first: their button opens the dialog with the same form the
  // confirmation page shows without this script. Start and Stop are greyed (with a title
  // saying why) while they would do nothing; the reason line follows the live status.

  function startWhyNot(status) {
    const held = status.decision && ["stopped", "paused"].includes(status.decision.kind);
    if (status.settings && status.settings.disabled) return "Disabled: enable it first";
    if (status.state !== "stopped" && !held) return "Already active: it plans runs";
    return "";
  }

  function stopWhyNot(status) {
    if (status.state === "stopped") return "Already stopped";
    if (status.state === "disabled") return "Disabled: nothing is planned or running";
    return "";
  }

  function grey(button, whyNot, title) {
    button.disabled = Boolean(whyNot);
    button.title = whyNot || title;
  }

  function applyDecision(container, status) {
    container.querySelectorAll('[data-field="decision"]').forEach((p) => {
      p.textContent = status.decision ? status.decision.text : "";
      p.hidden = !status.decision;
    });
    container.querySelectorAll('[data-field="retry"]').forEach((p) => {
      const retry = status.retry;
      p.textContent = retry ? `retry ${retry.attempt} of ${retry.of} at ${utcText(status.next_planned_at)}` : "";
      p.hidden = !retry;
    });
    const paused = status.decision && status.decision.kind === "paused";
    container.querySelectorAll('[data-control="start"]').forEach((button) => {
      grey(button, startWhyNot(status), paused ? "End the pause now" : "Plan runs again");
      const label = button.querySelector("span");
      if (label) label.textContent = paused ? "Resume" : "Start";
    });
    container.querySelectorAll('[data-control="stop"]').forEach((button) => {
      grey(button, stopWhyNot(status), "Cancel the current run and plan nothing more");
    });
  }

  function confirmDecisions() {
    const minutes = -new Date().getTimezoneOffset();
    const sign = minutes < 0 ? "-" : "+";
    const zone = `UTC${sign}${pad(Math.floor(Math.abs(minutes) / 60))}:${pad(Math.abs(minutes) % 60)}`;
    document.querySelectorAll("[data-offset]").forEach((input) => { input.value = String(minutes); });
    document.querySelectorAll("[data-zone-note]").forEach((note) => { note.textContent = `times in your local time (${zone})`; });
    document.querySelectorAll("button[data-confirm]").forEach((button) => {
      const dialog = document.getElementById(button.dataset.confirm);
      if (!dialog || typeof dialog.showModal !== "function") return;  // the confirmation page instead
      button.addEventListener("click", (event) => {
        event.preventDefault();
        dialog.showModal();
        const first = dialog.querySelector('input[type="text"]');
        if (first) first.focus();
      });
      dialog.querySelectorAll("[data-close]").forEach((close) => {
        close.addEventListener("click", (event) => { event.preventDefault(); dialog.close(); });
      });
    });
  }
  /* end actions */

  // -- start ------------------------------------------------------------------------------

  formatTimes(document);
  const cards = document.querySelectorAll(".facts time").length;
  setInterval(tickRelative, cards > 400 ? 5000 : 1000);
  watchStates();
  tailLogs();
  previewCron();
  filterCards();
  confirmDecisions();
})();
