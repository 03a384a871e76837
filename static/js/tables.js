// Progressive enhancement for the dashboards (the pages work without it):
// - tables with class "sortable": click a column heading to sort its rows;
// - selects with data-autosubmit submit their form when changed;
// - the overview's name box filters the rows already shown as you type.
(function () {
  "use strict";

  function cellValue(row, index) {
    var cell = row.children[index];
    if (!cell) return "";
    var value = cell.getAttribute("data-sort") || cell.textContent.trim();
    var number = value.replace(/[$,%+\s]|calls?/g, "");
    if (number !== "" && !isNaN(Number(number))) return Number(number);
    return value.toLowerCase();
  }

  function makeSortable(table) {
    var headers = table.querySelectorAll("thead th");
    headers.forEach(function (th, index) {
      var button = document.createElement("button");
      button.type = "button";
      button.className = "sort-button";
      button.textContent = th.textContent;
      th.textContent = "";
      th.appendChild(button);
      th.setAttribute("aria-sort", "none");
      button.addEventListener("click", function () {
        var ascending = th.getAttribute("aria-sort") !== "ascending";
        headers.forEach(function (other) { other.setAttribute("aria-sort", "none"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows).filter(function (r) {
          return r.children.length > 1;
        });
        rows.sort(function (a, b) {
          var x = cellValue(a, index), y = cellValue(b, index);
          if (x === y) return 0;
          var order = x < y ? -1 : 1;
          return ascending ? order : -order;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  }

  function init(root) {
    root.querySelectorAll("table.sortable:not([data-sortable-ready])").forEach(function (t) {
      t.setAttribute("data-sortable-ready", "");
      makeSortable(t);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    init(document);
    document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
      select.addEventListener("change", function () { select.form.submit(); });
    });
    var box = document.querySelector("input[data-filter-name]");
    if (box) {
      box.addEventListener("input", function () {
        var text = box.value.trim().toLowerCase();
        document.querySelectorAll("#overview-table tbody tr[data-name]").forEach(function (row) {
          row.hidden = text !== "" && row.getAttribute("data-name").indexOf(text) === -1;
        });
      });
    }
  });
  // htmx swaps in a new month: make its tables sortable too.
  document.addEventListener("htmx:afterSwap", function (event) { init(event.target); });
})();
