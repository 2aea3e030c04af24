//! The console's style sheet and script, served from `/console/static/` (the Content-Security-
//! Policy allows scripts and styles only from there: no inline code).

/// Light and dark (following the system, or the toggle), readable from 390 px wide.
pub(crate) const CSS: &str = r#"
:root { --bg:#f7f7f8; --fg:#17181c; --muted:#5b5f6b; --card:#fff; --line:#d9dbe1; --accent:#1f5fbf;
  --ok:#17753a; --warn:#8a5a00; --bad:#b3261e; --focus:#ffbf47; color-scheme: light; }
@media (prefers-color-scheme: dark) { :root:not([data-theme=light]) { --bg:#111317; --fg:#e8e9ed;
  --muted:#a3a7b3; --card:#1a1d23; --line:#333844; --accent:#7fb0ff; --ok:#5cc98a; --warn:#e5b44f;
  --bad:#ff8a80; color-scheme: dark; } }
:root[data-theme=dark] { --bg:#111317; --fg:#e8e9ed; --muted:#a3a7b3; --card:#1a1d23; --line:#333844;
  --accent:#7fb0ff; --ok:#5cc98a; --warn:#e5b44f; --bad:#ff8a80; color-scheme: dark; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background:var(--bg); color:var(--fg); }
a { color:var(--accent); }
:focus-visible { outline:3px solid var(--focus); outline-offset:2px; }
.skip { position:absolute; left:-999px; } .skip:focus { left:8px; top:8px; background:var(--card); padding:6px; z-index:9; }
header { display:flex; flex-wrap:wrap; gap:8px 20px; align-items:center; padding:10px 20px; background:var(--card); border-bottom:1px solid var(--line); }
header .brand { font-weight:700; margin-right:8px; }
nav ul { display:flex; flex-wrap:wrap; gap:4px 14px; list-style:none; margin:0; padding:0; }
nav a[aria-current=page] { font-weight:700; text-decoration:none; color:var(--fg); }
header .who { margin-left:auto; display:flex; gap:10px; align-items:center; color:var(--muted); }
main { padding:16px 20px; max-width:1400px; margin:0 auto; }
h1 { font-size:1.4rem; margin:4px 0 12px; } h2 { font-size:1.1rem; margin:22px 0 8px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 14px; margin:10px 0; }
.table-wrap { overflow-x:auto; }
table { border-collapse:collapse; width:100%; background:var(--card); }
th, td { text-align:left; padding:6px 10px; border-bottom:1px solid var(--line); vertical-align:top; }
th { color:var(--muted); font-weight:600; white-space:nowrap; }
code, pre, textarea { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-size:13px; }
pre { white-space:pre-wrap; word-break:break-all; background:var(--bg); padding:8px; border-radius:6px; border:1px solid var(--line); }
.badge { display:inline-block; padding:0 8px; border-radius:10px; border:1px solid currentColor; font-size:12px; white-space:nowrap; }
.ok { color:var(--ok); } .warn { color:var(--warn); } .bad { color:var(--bad); } .muted { color:var(--muted); }
.flash { padding:8px 12px; border-radius:6px; border:1px solid currentColor; margin:8px 0; }
form.inline { display:inline; }
button, input, select, textarea { font:inherit; color:inherit; background:var(--card); border:1px solid var(--line); border-radius:6px; padding:5px 10px; }
button { cursor:pointer; border-color:var(--accent); color:var(--accent); }
button.danger { border-color:var(--bad); color:var(--bad); }
button[disabled] { opacity:.6; cursor:progress; }
textarea { width:100%; min-height:320px; }
label { display:inline-flex; gap:6px; align-items:center; }
.row { display:flex; flex-wrap:wrap; gap:8px 16px; align-items:center; }
.live-status { font-size:12px; color:var(--muted); }
.chart { width:100%; height:auto; }
figure { flex:1 1 320px; margin:0; min-width:0; }
figcaption { font-size:13px; color:var(--muted); }
dl { display:grid; grid-template-columns:max-content 1fr; gap:4px 16px; margin:0; }
dt { color:var(--muted); } dd { margin:0; }
.chart polyline { fill:none; stroke:var(--accent); stroke-width:2; }
.chart circle { fill:var(--accent); }
.chart text { fill:var(--muted); font-size:11px; }
.chart line { stroke:var(--line); }
.diff-add { color:var(--ok); } .diff-del { color:var(--bad); }
@media (max-width: 600px) { main { padding:10px; } header { padding:8px 10px; } th, td { padding:5px 6px; } }
"#;

/// Theme toggle, confirmations with progress, live regions with back-off, copy buttons.
pub(crate) const JS: &str = r#"
(function () {
  "use strict";
  var root = document.documentElement;
  var saved = localStorage.getItem("omc-theme");
  if (saved) root.setAttribute("data-theme", saved);
  var toggle = document.getElementById("theme");
  if (toggle) toggle.addEventListener("click", function () {
    var dark = root.getAttribute("data-theme") === "dark" ||
      (!root.getAttribute("data-theme") && matchMedia("(prefers-color-scheme: dark)").matches);
    var next = dark ? "light" : "dark";
    root.setAttribute("data-theme", next);
    localStorage.setItem("omc-theme", next);
  });
  document.querySelectorAll("form[data-confirm]").forEach(function (f) {
    f.addEventListener("submit", function (e) {
      if (!window.confirm(f.getAttribute("data-confirm"))) { e.preventDefault(); return; }
    });
  });
  document.querySelectorAll("form").forEach(function (f) {
    f.addEventListener("submit", function (e) {
      if (e.defaultPrevented) return;
      var b = f.querySelector("button[type=submit], button:not([type])");
      if (b) { b.disabled = true; b.setAttribute("aria-busy", "true"); b.textContent = "Working\u2026"; }
    });
  });
  document.querySelectorAll("[data-copy]").forEach(function (b) {
    b.addEventListener("click", function () {
      var el = document.getElementById(b.getAttribute("data-copy"));
      if (!el || !navigator.clipboard) return;
      navigator.clipboard.writeText(el.textContent).then(function () { b.textContent = "Copied"; });
    });
  });
  document.querySelectorAll("[data-live]").forEach(function (el) {
    var base = parseInt(el.getAttribute("data-interval") || "3000", 10), delay = base;
    var status = document.getElementById(el.getAttribute("data-status") || "");
    function tick() {
      fetch(el.getAttribute("data-live"), { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) {
          if (r.status === 401) { window.location = "/console/login"; throw new Error("signed out"); }
          if (!r.ok) throw new Error("HTTP " + r.status);
          return r.text();
        })
        .then(function (html) {
          el.innerHTML = html; delay = base;
          if (status) status.textContent = "Live: updated " + new Date().toLocaleTimeString();
        })
        .catch(function (err) {
          delay = Math.min(delay * 2, 60000);
          if (status) status.textContent = "Updates failed (" + err.message + "); retrying in " + Math.round(delay / 1000) + " s";
        })
        .then(function () { setTimeout(tick, delay); });
    }
    setTimeout(tick, delay);
  });
})();
"#;
