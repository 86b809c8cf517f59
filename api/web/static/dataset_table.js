// The dataset table: sort by any column (header buttons), choose the columns (remembered in this
// browser), select rows to download their originals as one ZIP or to compare 2-4 side by side.
// Without this script the table still reads, and "Compare" still submits the ticked rows.
(function () {
  "use strict";

  const form = document.getElementById("table-form");
  if (!form) return;
  const table = document.getElementById("image-table");
  const body = table.tBodies[0];
  const strings = JSON.parse(document.getElementById("table-strings").textContent);
  const csrf = JSON.parse(document.getElementById("csrf-token").textContent);
  const storageKey = form.dataset.storageKey;
  const compareMin = Number(form.dataset.compareMin);
  const compareMax = Number(form.dataset.compareMax);
  const downloadButton = document.getElementById("download-selection");
  const compareButton = document.getElementById("compare-selection");
  const count = document.getElementById("selection-count");
  const failure = document.getElementById("table-error");

  // ---------------------------------------------------------------- columns

  function cellsOf(key) {
    return table.querySelectorAll('[data-column="' + CSS.escape(key) + '"]');
  }

  function showColumn(key, shown) {
    for (const cell of cellsOf(key)) {
      if (cell.tagName === "TH" || cell.tagName === "TD") cell.hidden = !shown;
    }
  }

  function savedColumns() {
    try {
      return JSON.parse(window.localStorage.getItem(storageKey) || "null");
    } catch (error) {
      return null;
    }
  }

  const chooser = document.querySelectorAll("#column-chooser input[data-column]");
  const saved = savedColumns();
  for (const box of chooser) {
    if (saved && Object.prototype.hasOwnProperty.call(saved, box.dataset.column)) {
      box.checked = Boolean(saved[box.dataset.column]);
    }
    showColumn(box.dataset.column, box.checked);
    box.addEventListener("change", function () {
      showColumn(box.dataset.column, box.checked);
      const choice = savedColumns() || {};
      choice[box.dataset.column] = box.checked;
      try {
        window.localStorage.setItem(storageKey, JSON.stringify(choice));
      } catch (error) {
        // private mode: the choice lasts for this page only
      }
    });
  }

  // ---------------------------------------------------------------- sorting

  const collator = new Intl.Collator(document.documentElement.lang, { numeric: true, sensitivity: "base" });

  function sortBy(header, direction) {
    const key = header.dataset.column;
    const numeric = header.dataset.sortType === "number";
    const rows = Array.from(body.rows);
    const valueOf = function (row) {
      const cell = row.querySelector('td[data-column="' + CSS.escape(key) + '"]');
      return cell ? cell.dataset.sort : "";
    };
    rows.sort(function (a, b) {
      const x = valueOf(a);
      const y = valueOf(b);
      // Rows without a value go last, whichever the direction.
      if (x === "" || y === "") return (x === "") - (y === "");
      const order = numeric ? Number(x) - Number(y) : collator.compare(x, y);
      return direction === "ascending" ? order : -order;
    });
    for (const row of rows) body.appendChild(row);
    for (const other of table.tHead.rows[0].cells) {
      if (other !== header) other.removeAttribute("aria-sort");
    }
    header.setAttribute("aria-sort", direction);
  }

  for (const header of table.tHead.rows[0].cells) {
    if (!header.dataset.column) continue;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "sort";
    while (header.firstChild) button.appendChild(header.firstChild);
    header.appendChild(button);
    button.addEventListener("click", function () {
      const next = header.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
      sortBy(header, next);
    });
  }

  // ---------------------------------------------------------------- selection

  function selected() {
    return Array.from(body.querySelectorAll('input[name="image"]:checked')).map(function (box) {
      return box.closest("tr");
    });
  }

  function updateSelection() {
    const rows = selected();
    count.textContent = rows.length ? strings.selected.replace("{num}", String(rows.length)) : "";
    downloadButton.disabled = rows.length === 0;
    compareButton.disabled = rows.length < compareMin || rows.length > compareMax;
  }

  body.addEventListener("change", updateSelection);
  updateSelection();

  form.addEventListener("submit", function (event) {
    // Compare: the ticked rows in the table's current order.
    event.preventDefault();
    const ids = selected().map(function (row) { return row.dataset.imageId; });
    if (ids.length < compareMin || ids.length > compareMax) return;
    window.location.assign("/compare?images=" + ids.map(encodeURIComponent).join(","));
  });

  downloadButton.addEventListener("click", async function () {
    const fileIds = [];
    for (const row of selected()) {
      for (const id of (row.dataset.fileIds || "").split(" ")) {
        if (id && fileIds.indexOf(id) < 0) fileIds.push(id);
      }
    }
    if (!fileIds.length) return;
    failure.hidden = true;
    downloadButton.disabled = true;
    count.textContent = strings.downloading;
    try {
      const response = await fetch("/api/downloads/zip", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf || "" },
        body: JSON.stringify({ file_ids: fileIds, name: form.dataset.datasetName || "selection" }),
      });
      if (!response.ok) throw new Error(String(response.status));
      const blob = await response.blob();
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = (form.dataset.datasetName || "selection") + ".zip";
      document.body.appendChild(link);
      link.click();
      link.remove();
      setTimeout(function () { URL.revokeObjectURL(link.href); }, 60000);
    } catch (error) {
      failure.textContent = strings.downloadFailed;
      failure.hidden = false;
    } finally {
      updateSelection();
    }
  });
})();
