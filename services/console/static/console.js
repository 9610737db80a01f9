// The console's own script: the CSRF header on every htmx request, the theme toggle, timeline bars, the JSON
// editor's validation, and live updates of a workflow page from its server-sent events (no polling).
// Nothing here builds HTML from data: text goes in with textContent, markup only comes from the server.
(function () {
  "use strict";

  var csrf = document.querySelector('meta[name="csrf-token"]');

  document.body.addEventListener("htmx:configRequest", function (event) {
    if (csrf && event.detail.verb !== "get") { event.detail.headers["X-CSRF-Token"] = csrf.content; }
  });

  // -- dark and light ---------------------------------------------------------------------------------------
  var toggle = document.getElementById("theme");
  if (toggle) {
    toggle.addEventListener("click", function () {
      var root = document.documentElement;
      var dark = root.dataset.theme ? root.dataset.theme === "dark"
        : window.matchMedia("(prefers-color-scheme: dark)").matches;
      root.dataset.theme = dark ? "light" : "dark";
      try { window.localStorage.setItem("bdurable-theme", root.dataset.theme); } catch (e) { /* private mode */ }
    });
  }

  // -- timeline bars (CSS variables set here: the policy allows no inline style) ----------------------------
  function drawBars(root) {
    root.querySelectorAll(".bar > span[data-offset]").forEach(function (bar) {
      bar.style.setProperty("--offset", bar.dataset.offset + "%");
      bar.style.setProperty("--width", bar.dataset.width + "%");
    });
  }

  // -- which actions the workflow's status allows ------------------------------------------------------------
  function showActions() {
    var live = document.getElementById("live");
    if (!live) { return; }
    var status = live.dataset.status;
    document.querySelectorAll("[data-when]").forEach(function (element) {
      element.hidden = element.dataset.when.split(" ").indexOf(status) < 0;
    });
  }

  // -- the JSON editor ---------------------------------------------------------------------------------------
  function checkJson(editor) {
    var problem = document.getElementById(editor.id + "-problem");
    var button = editor.form ? editor.form.querySelector("button[type=submit]") : null;
    var message = "";
    if (editor.value.trim() !== "") {
      try { JSON.parse(editor.value); } catch (e) { message = "Not valid JSON: " + e.message; }
    }
    editor.setCustomValidity(message);
    editor.classList.toggle("invalid", message !== "");
    if (problem) { problem.textContent = message; }
    if (button) { button.disabled = message !== ""; }
  }
  document.querySelectorAll("[data-json-editor]").forEach(function (editor) {
    editor.addEventListener("input", function () { checkJson(editor); });
    checkJson(editor);
  });

  // -- live updates of one workflow --------------------------------------------------------------------------
  var indicator = document.getElementById("live-indicator");
  var refreshing = false;
  var again = false;

  function refresh() {
    if (refreshing) { again = true; return; }
    refreshing = true;
    window.htmx.ajax("GET", window.location.pathname, { target: "#live", select: "#live", swap: "outerHTML" })
      .finally(function () {
        refreshing = false;
        if (again) { again = false; refresh(); }
      });
  }

  if (indicator && indicator.dataset.stream) {
    var live = document.getElementById("live");
    if (live && live.dataset.finished !== "true" && window.EventSource) {
      var source = new EventSource(indicator.dataset.stream);
      source.addEventListener("status", function () {
        indicator.textContent = "live";
        indicator.classList.remove("off");
        refresh();
      });
      source.addEventListener("signal", function () { refresh(); });
      source.addEventListener("end", function () {
        source.close();
        indicator.textContent = "finished";
        indicator.classList.add("off");
        refresh();
      });
      source.addEventListener("error", function (event) {
        if (event.data) {  // the server said why the stream ended (the workflow expired, Redis failed)
          source.close();
          indicator.textContent = "stream ended";
          indicator.classList.add("off");
        }
      });
    }
  }

  document.body.addEventListener("bdurable-changed", function () {
    if (document.getElementById("live")) { refresh(); }
  });

  document.body.addEventListener("htmx:afterSettle", function (event) {
    drawBars(document);
    showActions();
  });

  drawBars(document);
  showActions();
})();
