// gerritflow status page: live updates over server-sent events, filters on
// the page's own model (the DOM the server rendered), elapsed times ticking.
// No framework, no build step. The server renders every fragment; this file
// only places them.
(function () {
  "use strict";
  if (window.performance && performance.mark) performance.mark("gerritflow-script");
  document.documentElement.classList.add("js");
  var main = document.getElementById("sets");
  var form = document.getElementById("filters");
  var conn = document.getElementById("conn");
  var empty = document.getElementById("empty");
  var region = document.getElementById("announce");
  var version = main.getAttribute("data-version") || "0";
  var filter = readFilter();

  // ---- filters ---------------------------------------------------------
  function readFilter() {
    var v = function (id) { return (document.getElementById(id).value || "").trim(); };
    var change = v("f-change"), changeInput = document.getElementById("f-change");
    var bad = change !== "" && !/^[0-9]+$/.test(change);
    changeInput.setAttribute("aria-invalid", bad ? "true" : "false");
    return {
      project: v("f-project").toLowerCase(),
      change: bad || change === "" ? "" : String(parseInt(change, 10)),
      job: v("f-job").toLowerCase(),
      state: v("f-state").toLowerCase()
    };
  }
  function isZero(f) { return !f.project && !f.change && !f.job && !f.state; }
  function matchSet(set, art) {
    var f = filter;
    if (f.project && art.getAttribute("data-project").toLowerCase().indexOf(f.project) < 0) return false;
    if (f.change && art.getAttribute("data-change") !== f.change) return false;
    if (f.job) {
      var rows = set.querySelectorAll("tr[data-job]"), hit = false;
      for (var i = 0; i < rows.length && !hit; i++) hit = rows[i].getAttribute("data-job").toLowerCase().indexOf(f.job) >= 0;
      if (!hit) return false;
    }
    if (f.state && (" " + set.getAttribute("data-states") + " ").indexOf(" " + f.state + " ") < 0) return false;
    return true;
  }
  function filterChange(art) {
    var sets = art.querySelectorAll(".set"), any = false;
    for (var i = 0; i < sets.length; i++) {
      var ok = matchSet(sets[i], art);
      sets[i].hidden = !ok;
      any = any || ok;
    }
    art.hidden = !any;
    return any;
  }
  function filterSection(sec) {
    var arts = sec.querySelectorAll("article.change"), any = false;
    for (var i = 0; i < arts.length; i++) any = filterChange(arts[i]) || any;
    sec.hidden = !any;
    return any;
  }
  function filterAll() {
    var secs = main.querySelectorAll("section.project");
    for (var i = 0; i < secs.length; i++) filterSection(secs[i]);
    updateEmpty();
  }
  function updateEmpty() {
    var any = main.querySelector("article.change:not([hidden])") !== null;
    empty.hidden = any;
    if (!any) {
      empty.textContent = isZero(filter)
        ? "No build set in flight or finished recently."
        : "No build set matches the filters.";
    }
  }
  var pending;
  function onFilterInput() {
    clearTimeout(pending);
    pending = setTimeout(function () {
      filter = readFilter();
      filterAll();
      var q = new URLSearchParams();
      if (filter.project) q.set("project", document.getElementById("f-project").value.trim());
      if (filter.change) q.set("change", filter.change);
      if (filter.job) q.set("job", document.getElementById("f-job").value.trim());
      if (filter.state) q.set("state", filter.state);
      var s = q.toString();
      history.replaceState(null, "", s ? "?" + s : location.pathname);
    }, 120);
  }
  form.addEventListener("input", onFilterInput);
  form.addEventListener("change", onFilterInput);
  form.addEventListener("submit", function (e) { e.preventDefault(); onFilterInput(); });
  document.getElementById("f-clear").addEventListener("click", function (e) {
    e.preventDefault();
    ["f-project", "f-change", "f-job", "f-state"].forEach(function (id) { document.getElementById(id).value = ""; });
    onFilterInput();
    document.getElementById("f-project").focus();
  });

  // ---- placing fragments -----------------------------------------------
  function section(project, token) {
    var sec = document.getElementById("p-" + token);
    if (sec) return sec;
    sec = document.createElement("section");
    sec.className = "project";
    sec.id = "p-" + token;
    sec.setAttribute("data-project", project);
    sec.setAttribute("aria-labelledby", "p-" + token + "-h");
    var h = document.createElement("h2");
    h.id = "p-" + token + "-h";
    h.textContent = project;
    sec.appendChild(h);
    var secs = main.querySelectorAll("section.project"), before = null;
    for (var i = 0; i < secs.length; i++) {
      if (secs[i].getAttribute("data-project") > project) { before = secs[i]; break; }
    }
    main.insertBefore(sec, before);
    var dl = document.getElementById("projects"), o = document.createElement("option");
    o.value = project;
    dl.appendChild(o);
    return sec;
  }
  function place(sec, art) {
    var order = +art.getAttribute("data-order"), key = art.id;
    var arts = sec.querySelectorAll("article.change"), before = null;
    for (var i = 0; i < arts.length; i++) {
      var o = +arts[i].getAttribute("data-order");
      if (o < order || (o === order && arts[i].id > key)) { before = arts[i]; break; }
    }
    sec.insertBefore(art, before);
  }
  function removeArt(art) {
    var sec = art.parentNode;
    art.remove();
    if (sec && !sec.querySelector("article.change")) sec.remove();
  }
  // Keyboard users keep their place when the change they are in is replaced.
  function focusKey(el) {
    var a = document.activeElement;
    if (!a || a === document.body || !el.contains(a)) return null;
    var all = el.querySelectorAll("a, button, [tabindex]");
    return Array.prototype.indexOf.call(all, a);
  }
  function restoreFocus(el, k) {
    var all = el.querySelectorAll("a, button, [tabindex]");
    (all[Math.min(k, all.length - 1)] || el.querySelector("h3")).focus();
  }
  function upsert(c) {
    var t = document.createElement("template");
    t.innerHTML = c.html;
    var art = t.content.firstElementChild;
    var old = document.getElementById("c-" + c.key);
    var fk = old ? focusKey(old) : null;
    var sec = section(c.project, c.ptoken);
    if (old && old.parentNode === sec && old.getAttribute("data-order") === art.getAttribute("data-order")) {
      old.replaceWith(art);
    } else {
      if (old) removeArt(old);
      sec = section(c.project, c.ptoken);
      place(sec, art);
      art.classList.add("flash");
    }
    filterSection(sec);
    tick(art);
    if (fk !== null && fk >= 0) restoreFocus(art, fk);
  }
  function applyBatch(d) {
    (d.changes || []).forEach(upsert);
    (d.removed || []).forEach(function (k) {
      var old = document.getElementById("c-" + k);
      if (old) removeArt(old);
    });
    counts(d.counts);
    setVersion(d.v);
    updateEmpty();
    queueNotes(d.notes);
  }
  function applyReset(d) {
    main.innerHTML = d.html;
    counts(d.counts);
    setVersion(d.v);
    filterAll();
    tick(main);
  }
  function counts(c) {
    if (!c) return;
    document.getElementById("n-inflight").textContent = c.in_flight;
    document.getElementById("n-finished").textContent = c.finished;
  }
  function setVersion(v) {
    version = String(v);
    main.setAttribute("data-version", version);
  }

  // ---- announcements (aria-live), at most one every 3 seconds ----------
  var notes = [], noteTimer = null;
  function queueNotes(ns) {
    (ns || []).forEach(function (n) {
      var art = document.getElementById("c-" + n.key);
      if (art && !art.hidden) notes.push(n.text);
    });
    if (notes.length && !noteTimer) noteTimer = setTimeout(flushNotes, 600);
  }
  function flushNotes() {
    var last = notes.slice(-3);
    notes = [];
    region.textContent = last.join(". ") + ".";
    noteTimer = setTimeout(function () { noteTimer = null; if (notes.length) flushNotes(); }, 3000);
  }

  // ---- elapsed times -----------------------------------------------------
  function fmt(sec) {
    sec = Math.max(0, Math.floor(sec));
    var h = Math.floor(sec / 3600), m = Math.floor((sec % 3600) / 60), s = sec % 60;
    if (h) return m ? h + "h " + m + "m" : h + "h";
    if (m) return m + "m " + s + "s";
    return s + "s";
  }
  function tick(root) {
    var now = Date.now(), els = (root || main).querySelectorAll(".elapsed[data-since]");
    for (var i = 0; i < els.length; i++) {
      var since = +els[i].getAttribute("data-since");
      if (!since) continue;
      var secs = (now - since) / 1000, text = fmt(secs);
      if (els[i].textContent !== text) els[i].textContent = text;
      var p = els[i].parentNode.querySelector("progress");
      if (p) p.value = Math.min(secs, +p.max);
    }
  }
  setInterval(function () { if (!document.hidden) tick(main); }, 1000);

  // ---- the live stream ---------------------------------------------------
  function status(text, cls) {
    conn.textContent = text;
    conn.className = "conn " + cls;
  }
  var es, retry;
  function connect() {
    es = new EventSource("/api/events?since=" + encodeURIComponent(version));
    es.onopen = function () { status("Live", "conn-live"); };
    es.onerror = function () {
      if (es.readyState === EventSource.CLOSED) { // the server refused: try again later
        status("Disconnected, retrying", "conn-down");
        clearTimeout(retry);
        retry = setTimeout(connect, 5000);
      } else {
        status("Reconnecting", "conn-down");
      }
    };
    es.addEventListener("batch", function (e) { applyBatch(JSON.parse(e.data)); });
    es.addEventListener("reset", function (e) { applyReset(JSON.parse(e.data)); });
  }
  if (window.EventSource) {
    status("Connecting", "conn-down");
    connect();
  }
  filterAll();
  tick(main);
  if (window.performance && performance.mark) performance.mark("gerritflow-ready"); // first full render done
})();
