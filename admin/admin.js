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
  //
  // The server writes every absolute time as <time datetime="ISO" data-fmt="…">text with
  // its zone</time> (supervisor/web/present.py). Each is reformatted here in the browser's
  // zone (or in its data-zone) with Intl.DateTimeFormat, the zone always named; also the
  // ones added later, by this script or any other (a MutationObserver sees them).

  const pad = (n, w = 2) => String(n).padStart(w, "0");

  const formatters = new Map();
  function formatter(kind, zone) {
    const key = `${kind}|${zone || ""}`;
    let found = formatters.get(key);
    if (!found) {
      const parts = {
        date: { year: "numeric", month: "2-digit", day: "2-digit" },
        datetime: { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23", timeZoneName: "short" },
        clock: { hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZoneName: "short" },
        log: { hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3, hourCycle: "h23", timeZoneName: "short" },
      }[kind];
      try {
        found = new Intl.DateTimeFormat(undefined, zone ? { ...parts, timeZone: zone } : parts);
      } catch (_) {
        found = new Intl.DateTimeFormat(undefined, parts);  // an unknown zone: the browser's
      }
      formatters.set(key, found);
    }
    return found;
  }

  const relative = window.Intl && Intl.RelativeTimeFormat ? new Intl.RelativeTimeFormat(undefined, { numeric: "auto", style: "short" }) : null;

  function sameDay(date, now, zone) {
    const day = formatter("date", zone);
    return day.format(date) === day.format(now);
  }

  function relativeText(date, now) {
    const seconds = Math.round((date.getTime() - now) / 1000);
    const size = Math.abs(seconds);
    if (size < 2) return "just now";
    if (!relative) return "";
    if (size < 60) return relative.format(seconds, "second");
    if (size < 3600) return relative.format(Math.trunc(seconds / 60), "minute");
    if (size < 86400) return relative.format(Math.trunc(seconds / 3600), "hour");
    return relative.format(Math.trunc(seconds / 86400), "day");
  }

  // The text of one <time> element; null when it is not ours to change.
  function timeText(el, now) {
    if (el.hasAttribute("data-keep")) return null;
    const iso = el.getAttribute("datetime");
    if (!iso) return null;
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return null;
    const zone = el.dataset.zone || undefined;
    const fmt = el.dataset.fmt || "datetime";
    const dated = (text) => sameDay(date, now, zone) ? text : `${formatter("date", zone).format(date)} ${text}`;
    if (fmt === "log") return dated(formatter("log", zone).format(date));
    if (fmt === "clock") return dated(formatter("clock", zone).format(date));
    if (fmt === "ago") return relativeText(date, now) || el.textContent;  // not absolute: no zone
    if (fmt === "relative") {
      const rel = relativeText(date, now);
      return `${dated(formatter("clock", zone).format(date))}${rel ? ` (${rel})` : ""}`;
    }
    return formatter("datetime", zone).format(date);
  }

  function formatTime(el, now) {
    const text = timeText(el, now === undefined ? new Date() : new Date(now));
    if (text === null) return;
    if (!el.dataset.server) {
      el.dataset.server = el.getAttribute("title") || el.textContent;
    }
    if (el.textContent !== text) el.textContent = text;
    const title = `${formatter("datetime", el.dataset.zone || undefined).format(new Date(el.getAttribute("datetime")))} · ${el.dataset.server}`;
    if (el.title !== title) el.title = title;
    el.dataset.local = "1";
  }

  function formatTimes(root) {
    const now = Date.now();
    if (root.matches && root.matches("time[datetime]")) formatTime(root, now);
    root.querySelectorAll("time[datetime]").forEach((el) => formatTime(el, now));
  }

  function tickRelative() {
    const now = Date.now();
    document.querySelectorAll('time[data-fmt="relative"], time[data-fmt="ago"]').forEach((el) => formatTime(el, now));
  }

  // times added later (live updates, fragments, other scripts) are formatted as they come
  function watchTimes() {
    if (!window.MutationObserver) return;
    new MutationObserver((changes) => {
      for (const change of changes) {
        change.addedNodes.forEach((node) => {
          if (node.nodeType === Node.ELEMENT_NODE) formatTimes(node);
        });
      }
    }).observe(document.body, { childList: true, subtree: true });
  }

  function utcText(iso) {
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? iso : `${date.toISOString().slice(0, 19).replace("T", " ")} UTC`;
  }

  // -- long errors: kept whole, clamped to a few lines with "show all" -------------------

  function clampErrors(root) {
    root.querySelectorAll("[data-clamp]").forEach((el) => {
      let toggle = el.nextElementSibling;
      if (!toggle || !toggle.classList.contains("clamp-toggle")) {
        toggle = make("button", "clamp-toggle", "show all");
        toggle.type = "button";
        toggle.setAttribute("aria-expanded", "false");
        toggle.addEventListener("click", () => {
          const open = el.classList.toggle("is-open");
          toggle.setAttribute("aria-expanded", String(open));
          toggle.textContent = open ? "show less" : "show all";
        });
        el.after(toggle);
      }
      const open = el.classList.contains("is-open");
      toggle.hidden = el.hidden || (!open && el.scrollHeight <= el.clientHeight + 1);
    });
  }

  // -- small DOM helpers ------------------------------------------------------------------

  function make(tag, className, text) {
    const el = document.createElement(tag);
    if (className) el.className = className;
    if (text !== undefined && text !== null) el.textContent = text;
    return el;
  }

  function timeElement(iso, empty, fmt, zone) {
    if (!iso) return make("span", "none", empty || "—");
    const el = make("time", "", utcText(iso));
    el.setAttribute("datetime", iso);
    el.setAttribute("title", utcText(iso));
    el.dataset.fmt = fmt || "datetime";
    if (zone) el.dataset.zone = zone;
    formatTime(el, Date.now());
    return el;
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

  const BAD = new Set(["failed", "crashed", "timed_out"]);
  const isFailing = (status) => status.state === "failing" || BAD.has(status.last_outcome);

  function applyStatus(container, status) {
    if (container.classList.contains("card")) {
      container.dataset.state = status.state;
      container.dataset.outcome = status.last_outcome || "none";
      container.dataset.health = isFailing(status) ? "failing" : "ok";
    }
    container.querySelectorAll('[data-field="state"]').forEach((badge) => {
      badge.className = `badge state state-${status.state}`;
      badge.textContent = status.state.charAt(0).toUpperCase() + status.state.slice(1);
    });
    const unplanned = status.kind === "manual" ? "on demand" : "not planned";
    for (const [field, empty] of [["last_started_at"], ["last_completed_at"], ["next_planned_at", unplanned]]) {
      container.querySelectorAll(`[data-field="${field}"]`).forEach((dd) => {
        const shown = dd.querySelector("time:not([data-zone])");
        if (shown && shown.getAttribute("datetime") && status[field] &&
            new Date(shown.getAttribute("datetime")).getTime() === new Date(status[field]).getTime()) return;
        const el = timeElement(status[field], empty, "relative");
        const parts = [el];
        const zone = status.settings && status.settings.timezone;
        if (field === "next_planned_at" && status.kind === "cron" && status[field] && zone) {
          const there = make("span", "zone-time");
          there.dataset.zoneName = zone;
          there.append(timeElement(status[field], "", "clock", zone));
          parts.push(there);
        }
        dd.replaceChildren(...parts);
      });
    }
    container.querySelectorAll('[data-field="last_outcome"]').forEach((dd) => {
      const outcome = status.last_outcome;
      const current = dd.querySelector(".outcome");
      if (current && current.classList.contains(`outcome-${outcome || "none"}`)) return;  // keeps "(exit code 3)"
      (dd.querySelector("#last-outcome") || dd).replaceChildren(outcome
        ? make("span", `outcome outcome-${outcome}`, OUTCOME_WORDS[outcome] || outcome)
        : make("span", "outcome outcome-none", "—"));
    });
    container.querySelectorAll('[data-field="last_error"]').forEach((p) => {
      if (p.textContent !== (status.last_error || "")) p.textContent = status.last_error || "";
      p.hidden = !status.last_error;
    });
    clampErrors(container);
    container.querySelectorAll('[data-field="current_run_id"]').forEach((dd) => {
      dd.replaceChildren(status.current_run_id
        ? make("span", "mono", status.current_run_id.slice(0, 8))
        : make("span", "none", "—"));
    });
    container.querySelectorAll('[data-field="last_actor"]').forEach((dd) => {
      dd.textContent = status.last_actor || "—";
    });
    // --cluster: the host that owns the scheduler moves at a takeover or hand-off.
    container.querySelectorAll('[data-field="host"]').forEach((dd) => {
      dd.textContent = status.host || "—";
    });
    applyDecision(container, status);
  }

  // The summary counts every scheduler, shown or filtered out: from what the stream said
  // (its first event carries them all), else from the cards on the page.
  function recount(known) {
    const counts = {};
    let failing = 0;
    const statuses = known.size ? [...known.values()] : [...document.querySelectorAll(".card[data-state]")].map(
      (card) => ({ state: card.dataset.state, failing: card.dataset.health === "failing" }));
    for (const status of statuses) {
      counts[status.state] = (counts[status.state] || 0) + 1;
      if (status.failing === undefined ? isFailing(status) : status.failing) failing += 1;
    }
    document.querySelectorAll("[data-count]").forEach((pill) => {
      const strong = pill.querySelector("strong");
      if (strong) strong.textContent = String(counts[pill.dataset.count] || 0);
    });
    document.querySelectorAll("[data-failing] strong").forEach((strong) => { strong.textContent = String(failing); });
  }

  async function fetchFragment(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
    if (!response.ok) return null;
    return new DOMParser().parseFromString(await response.text(), "text/html");
  }

  let historyTimer = null;
  function refreshHistory() {
    const url = body.dataset.history;
    if (!url) return;
    clearTimeout(historyTimer);
    historyTimer = setTimeout(async () => {
      try {
        const doc = await fetchFragment(url);
        if (!doc) return;
        const parts = doc.getElementById("status-parts");
        const found = (id) => doc.getElementById(id) || (parts && parts.content.getElementById(id));
        for (const id of ["run-chart", "run-table", "health-line", "last-outcome"]) {
          const fresh = found(id);
          const target = document.getElementById(id);
          if (fresh && target) {
            const node = document.importNode(fresh, true);
            target.replaceWith(node);
            formatTimes(node);
            clampErrors(node);
          }
        }
      } catch (_) { /* the next change tries again */ }
    }, 250);
  }

  // A card whose scheduler started or ended a run is drawn again by the server: its colour,
  // health line ("failing since …"), strip of outcomes and exit code all move together.
  const staleCards = new Set();
  let cardTimer = null;
  function refreshCards(ids) {
    ids.forEach((id) => staleCards.add(id));
    clearTimeout(cardTimer);
    cardTimer = setTimeout(async () => {
      const asked = [...staleCards];
      staleCards.clear();
      if (!asked.length) return;
      try {
        const doc = await fetchFragment(`/?cards=${encodeURIComponent(asked.join(","))}`);
        if (!doc) return;
        doc.querySelectorAll("article.card[data-id]").forEach((fresh) => {
          const target = document.querySelector(`article.card[data-id="${CSS.escape(fresh.dataset.id)}"]`);
          if (!target) return;
          const node = document.importNode(fresh, true);
          node.hidden = target.hidden;
          target.replaceWith(node);
          formatTimes(node);
          clampErrors(node);
        });
        orderCards();
        document.dispatchEvent(new CustomEvent("cards-changed"));
      } catch (_) { /* the next change tries again */ }
    }, 300);
  }

  // Failing cards first, then definition order (``data-rank``), as the server orders them:
  // a card that fails moves up, one that recovers goes back to its place. Moved only when
  // that order is broken, so a quiet page never shuffles.
  function orderCards() {
    const cards = [...document.querySelectorAll(".cards > article.card")];
    if (!cards.length) return;
    const key = (card) => [card.dataset.health === "failing" ? 0 : 1, Number(card.dataset.rank) || 0];
    const wanted = [...cards].sort((a, b) => {
      const [x, y] = [key(a), key(b)];
      return x[0] - y[0] || x[1] - y[1];
    });
    if (wanted.every((card, i) => card === cards[i])) return;
    const parent = cards[0].parentElement;
    const fragment = document.createDocumentFragment();
    wanted.forEach((card) => fragment.append(card));
    parent.append(fragment);
  }

  function watchStates() {
    const url = body.dataset.events;
    if (!url || !window.EventSource) return;
    const containers = () => {
      const found = new Map();
      document.querySelectorAll("[data-id]").forEach((el) => {
        if (el === body) return;
        const list = found.get(el.dataset.id) || [];
        list.push(el);
        found.set(el.dataset.id, list);
      });
      return found;
    };
    const stamp = (value) => (value ? new Date(value).getTime() : null);
    const differs = (before, status) => before.state !== status.state ||
      stamp(before.last_started_at) !== stamp(status.last_started_at) ||
      stamp(before.last_completed_at) !== stamp(status.last_completed_at) ||
      (before.last_outcome || null) !== (status.last_outcome || null);
    const last = new Map();
    // what the page was rendered with, so a change before the stream opened is seen too
    document.querySelectorAll(".status-panel[data-id], .card[data-id]").forEach((el) => {
      last.set(el.dataset.id, {
        state: el.dataset.state,
        last_started_at: el.dataset.started || null,
        last_completed_at: el.dataset.completed || null,
        last_outcome: el.dataset.outcome === "none" ? null : el.dataset.outcome || null,
      });
    });
    const known = new Map();
    stream(url, { status: (event) => {
      let changed;
      try { changed = JSON.parse(event.data); } catch (_) { return; }
      let reload = false;
      const redraw = [];
      const shown = containers();
      for (const status of changed) {
        const before = last.get(status.id);
        last.set(status.id, status);
        known.set(status.id, status);
        (shown.get(status.id) || []).forEach((el) => applyStatus(el, status));
        if (before && differs(before, status)) {
          reload = true;
          redraw.push(status.id);
        }
      }
      if (body.dataset.page === "overview") {
        recount(known);
        if (redraw.length) refreshCards(redraw.filter((id) => shown.has(id)));
        applyFilter();
      }
      if (reload) refreshHistory();
    } });
  }

  // -- log tail ---------------------------------------------------------------------------

  function logRow(record, base, showRun, previousRun) {
    const startsRun = previousRun !== record.run_id ? " run-start" : "";
    const li = make("li", `log-row level-${record.level} source-${record.source} is-new${startsRun}`);
    li.dataset.cursor = String(record.cursor);
    li.dataset.run = record.run_id;
    const time = timeElement(record.time, "", "log");
    time.classList.add("log-time");
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
    if (base) {
      li.id = `log-${record.cursor}`;
      const permalink = make("a", "log-permalink", "link");
      permalink.href = `${base}?at=${encodeURIComponent(String(record.cursor))}#log-${record.cursor}`;
      permalink.title = "A link to this record";
      meta.append(permalink);
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
            li.append(timeElement(t.iso, "", "datetime", data.timezone));
            return li;
          }));
        } catch (_) { /* keep the last preview */ }
      }, 300);
    };
    form.querySelectorAll("[data-preview-input]").forEach((input) => input.addEventListener("input", update));
  }

  // -- card filter ------------------------------------------------------------------------
  // Typing filters the cards at once and keeps the filter in the URL (so a reload or a
  // shared link shows the same); nothing matching says so instead of leaving a blank page.

  let applyFilter = () => {};

  function filterCards() {
    const input = document.querySelector("[data-filter]");
    if (!input) return;
    const form = input.closest("form");
    const outcome = document.querySelector("[data-outcome-filter]");
    const note = document.querySelector('[data-field="filter"]');
    const empty = document.querySelector('[data-field="no-match"]');
    const params = new URL(location.href).searchParams;
    const onlyFailing = params.get("filter") === "failing";
    const serverOutcome = params.get("outcome") || "";
    applyFilter = () => {
      const terms = input.value.toLowerCase().split(/\s+/).filter(Boolean);
      const wanted = outcome ? outcome.value : "";
      let shown = 0;
      const cards = document.querySelectorAll(input.dataset.filter);
      cards.forEach((el) => {
        const text = el.dataset.search || "";
        const hide = !terms.every((t) => text.includes(t)) ||
          (wanted && el.dataset.outcome !== wanted) ||
          (onlyFailing && el.dataset.health !== "failing");
        el.hidden = Boolean(hide);
        if (!hide) shown += 1;
      });
      const filtered = terms.length > 0 || wanted || onlyFailing;
      if (empty) {
        empty.hidden = !filtered || shown > 0 || (cards.length === 0 && !serverOutcome && !params.get("q") && !onlyFailing);
        const h = empty.querySelector("[data-no-match-text]");
        if (h && filtered && shown === 0) {
          h.textContent = terms.length ? `No scheduler matches '${input.value.trim()}'${onlyFailing ? " among the failing ones" : ""}`
            : wanted ? `No scheduler's last run ${(OUTCOME_WORDS[wanted] || wanted).toLowerCase()}` : "No scheduler is failing";
        }
      }
      if (note) {
        note.hidden = !filtered || shown === 0;
        const matched = note.querySelector("[data-matched]");
        if (matched) matched.textContent = `Showing ${shown} of ${matched.dataset.total}`;
      }
    };
    const keepInUrl = () => {
      const url = new URL(location.href);
      const q = input.value.trim();
      if (q) url.searchParams.set("q", q); else url.searchParams.delete("q");
      if (outcome && outcome.value) url.searchParams.set("outcome", outcome.value); else url.searchParams.delete("outcome");
      history.replaceState(null, "", url.pathname + url.search);
      const pill = document.querySelector("a.pill.health-failing");
      if (pill && !onlyFailing) {
        const target = new URL(url.href);
        target.searchParams.set("filter", "failing");
        pill.setAttribute("href", target.pathname + target.search);
      }
    };
    // the server left out what did not match its ?q=: a wider text asks it again
    const serverTerms = (params.get("q") || "").toLowerCase().split(/\s+/).filter(Boolean);
    const widens = () => {
      const terms = input.value.toLowerCase().split(/\s+/).filter(Boolean);
      return serverTerms.some((old) => !terms.some((t) => t.includes(old)));
    };
    let again = null;
    input.addEventListener("input", () => {
      applyFilter();
      keepInUrl();
      clearTimeout(again);
      if (widens()) again = setTimeout(() => location.replace(location.pathname + location.search), 400);
    });
    if (outcome) {
      // the server may have filtered the cards out already: a wider choice asks it again
      outcome.addEventListener("change", () => {
        keepInUrl();
        if (serverOutcome && outcome.value !== serverOutcome) location.assign(location.pathname + location.search);
        else applyFilter();
      });
    }
    if (form) form.addEventListener("submit", (event) => { event.preventDefault(); applyFilter(); keepInUrl(); });
    document.addEventListener("cards-changed", () => applyFilter());
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
    // The zone's name, so a date across a DST change is read at that date's offset; the
    // offset is what a browser without zone names sends instead.
    let named = "";
    try { named = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (error) { named = ""; }
    document.querySelectorAll("[data-offset]").forEach((input) => {
      input.value = String(minutes);
      if (!named || !input.form || input.form.querySelector('input[name="zone"]')) return;
      const field = document.createElement("input");
      field.type = "hidden";
      field.name = "zone";
      field.value = named;
      input.after(field);
    });
    const shownZone = named ? `${named}, now ${zone}` : zone;
    document.querySelectorAll("[data-zone-note]").forEach((note) => { note.textContent = `times in your local time (${shownZone})`; });
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
  watchTimes();
  clampErrors(document);
  window.addEventListener("resize", () => clampErrors(document));
  const relatives = document.querySelectorAll('time[data-fmt="relative"], time[data-fmt="ago"]').length;
  setInterval(tickRelative, relatives > 400 ? 5000 : 1000);
  watchStates();
  tailLogs();
  previewCron();
  filterCards();
  confirmDecisions();
})();
