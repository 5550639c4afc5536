// The pnbridge console's progressive enhancement: the console works without it.
// Sorts table.sortable by a click on a header; shows <time datetime> in local time.
"use strict";

(function () {
  function cellValue(row, index) {
    var cell = row.cells[index];
    if (!cell) return { kind: "text", value: "" };
    var time = cell.querySelector("time[datetime]");
    if (time) {
      var at = Date.parse(time.getAttribute("datetime"));
      if (!isNaN(at)) return { kind: "number", value: at };
    }
    var text = (cell.getAttribute("data-sort") || cell.textContent).trim();
    var number = text.replace(/[,\s]/g, "").replace(/(ms|s|%)$/, "");
    if (number !== "" && /^[-+]?\d*\.?\d+(e[-+]?\d+)?$/i.test(number)) {
      return { kind: "number", value: parseFloat(number) };
    }
    return { kind: "text", value: text.toLowerCase() };
  }

  function compare(a, b) {
    if (a.kind === "number" && b.kind === "number") return a.value - b.value;
    if (a.kind !== b.kind) return a.kind === "number" ? -1 : 1;
    return a.value < b.value ? -1 : a.value > b.value ? 1 : 0;
  }

  function sortBy(table, th) {
    var index = Array.prototype.indexOf.call(th.parentNode.cells, th);
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    Array.prototype.forEach.call(th.parentNode.cells, function (other) {
      other.removeAttribute("aria-sort");
    });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    Array.prototype.forEach.call(table.tBodies, function (body) {
      var rows = Array.prototype.slice.call(body.rows);
      var keyed = rows.map(function (row, at) {
        return { row: row, key: cellValue(row, index), at: at };
      });
      keyed.sort(function (x, y) {
        var order = compare(x.key, y.key);
        return (ascending ? order : -order) || x.at - y.at;
      });
      keyed.forEach(function (item) { body.appendChild(item.row); });
    });
  }

  function sortable(table) {
    var head = table.tHead ? table.tHead.rows[0] : table.rows[0];
    if (!head) return;
    Array.prototype.forEach.call(head.cells, function (th) {
      if (th.tagName !== "TH") return;
      th.tabIndex = 0;
      th.title = "Sort by this column";
      th.addEventListener("click", function () { sortBy(table, th); });
      th.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          sortBy(table, th);
        }
      });
    });
  }

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function localTime(element) {
    var at = new Date(element.getAttribute("datetime"));
    if (isNaN(at.getTime())) return;
    if (!element.title) element.title = element.getAttribute("datetime");
    element.textContent = at.getFullYear() + "-" + pad(at.getMonth() + 1) + "-" +
      pad(at.getDate()) + " " + pad(at.getHours()) + ":" + pad(at.getMinutes()) + ":" +
      pad(at.getSeconds());
    element.classList.add("local");
  }

  function enhance() {
    document.querySelectorAll("table.sortable").forEach(sortable);
    document.querySelectorAll("time[datetime]").forEach(localTime);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", enhance);
  } else {
    enhance();
  }
})();
