// Dark or light before the first paint: the choice saved by the toggle, else the system's.
(function () {
  var saved = null;
  try { saved = window.localStorage.getItem("bdurable-theme"); } catch (e) { /* private mode */ }
  if (saved === "dark" || saved === "light") { document.documentElement.dataset.theme = saved; }
})();
