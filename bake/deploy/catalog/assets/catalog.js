// bake catalog: sorting, filtering and search over the pages' own tables.
// No network use, no eval, no innerHTML: values are put into the page as text only.
"use strict";

(function () {
  function cellValue(row, index) {
    var cell = row.cells[index];
    if (!cell) return "";
    return cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
  }

  function versionKey(text) {
    return text.split(/[^0-9]+/).filter(Boolean).map(Number);
  }

  function compare(a, b, type) {
    if (type === "number") return (parseFloat(a) || 0) - (parseFloat(b) || 0);
    if (type === "version") {
      var x = versionKey(a), y = versionKey(b);
      for (var i = 0; i < Math.max(x.length, y.length); i++) {
        var d = (x[i] || 0) - (y[i] || 0);
        if (d) return d;
      }
      return 0;
    }
    return a.localeCompare(b, undefined, { numeric: true, sensitivity: "base" });
  }

  function makeSortable(table) {
    var headers = table.tHead ? table.tHead.rows[0].cells : [];
    Array.prototype.forEach.call(headers, function (th, index) {
      th.tabIndex = 0;
      function sort() {
        var ascending = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(headers, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        var type = th.getAttribute("data-type") || "text";
        Array.prototype.forEach.call(table.tBodies, function (body) {
          var rows = Array.prototype.slice.call(body.rows);
          rows.sort(function (r1, r2) {
            var d = compare(cellValue(r1, index), cellValue(r2, index), type);
            return ascending ? d : -d;
          });
          rows.forEach(function (r) { body.appendChild(r); });
        });
      }
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (e) { if (e.key === "Enter") sort(); });
    });
  }

  function matches(text, terms) {
    text = text.toLowerCase();
    return terms.every(function (t) { return text.indexOf(t) !== -1; });
  }

  function terms(value) {
    return value.toLowerCase().split(/\s+/).filter(Boolean);
  }

  function filterRows(table, value) {
    var want = terms(value), shown = 0;
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      var ok = matches(row.textContent, want);
      row.hidden = !ok;
      if (ok) shown++;
    });
    return shown;
  }

  function el(tag, text, className) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function link(text, href) {
    var a = el("a", text);
    a.setAttribute("href", href);
    return a;
  }

  // The overview's search covers every image (assets/search-index.js), not only this page.
  function globalSearch(input, table, index) {
    var pageBody = table.tBodies[0];
    var results = document.createElement("tbody");
    results.hidden = true;
    table.appendChild(results);
    var count = document.getElementById("search-count");
    input.addEventListener("input", function () {
      var want = terms(input.value);
      while (results.firstChild) results.removeChild(results.firstChild);
      if (!want.length) {
        results.hidden = true;
        pageBody.hidden = false;
        if (count) count.textContent = "";
        return;
      }
      var found = index.filter(function (r) { return matches([r[0], r[2], r[3], r[4]].join(" "), want); });
      found.slice(0, 500).forEach(function (r) {
        var tr = el("tr", null, r[3]);
        var name = el("td"); name.appendChild(link(r[0], r[1])); tr.appendChild(name);
        var state = el("td"); state.appendChild(el("span", r[3], "badge " + r[3])); tr.appendChild(state);
        tr.appendChild(el("td", r[2]));
        var latest = el("td"); if (r[4]) latest.appendChild(link(r[4], r[5])); tr.appendChild(latest);
        var versions = el("td", r[6]); versions.setAttribute("data-sort", r[6]); tr.appendChild(versions);
        var revoked = el("td", r[7]); revoked.setAttribute("data-sort", r[7]); tr.appendChild(revoked);
        tr.appendChild(el("td", r[8]));
        results.appendChild(tr);
      });
      pageBody.hidden = true;
      results.hidden = false;
      if (count) count.textContent = found.length + " of " + index.length + " images" + (found.length > 500 ? " (first 500 shown)" : "");
    });
  }

  function staleBanner() {
    var expires = Date.parse(document.body.getAttribute("data-expires") || "");
    var banner = document.getElementById("stale");
    if (banner && !isNaN(expires) && Date.now() > expires) banner.hidden = false;
  }

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), makeSortable);
    Array.prototype.forEach.call(document.querySelectorAll("input[data-filter]"), function (input) {
      var table = document.getElementById(input.getAttribute("data-filter"));
      if (!table) return;
      var index = window[table.getAttribute("data-search-index") || ""];
      if (Array.isArray(index)) {
        globalSearch(input, table, index);
      } else {
        input.addEventListener("input", function () { filterRows(table, input.value); });
      }
    });
    staleBanner();
  });
})();
