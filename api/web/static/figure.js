// The image page's "Export figure" panel: the current view, the whole image or a saved ROI with a
// margin, rendered as the tiles are (the viewer's rendering parameters), downloaded as PNG or
// TIFF from the figure API.
(function () {
  "use strict";

  const form = document.getElementById("figure-form");
  if (!form) return;
  const note = document.getElementById("figure-note");
  const button = document.getElementById("figure-export");
  let image = window.allmicroImage || null;

  document.addEventListener("allmicro:viewer-ready", function (event) {
    image = event.detail;
  });

  // What a figure may show, in full-resolution pixels: the sample's part of the frame while the
  // viewer hides the instrument's data bar, else the whole frame.
  function frame() {
    const region = image && image.imageRegion;
    const barShown = image && image.dataBarShown ? image.dataBarShown() : true;
    if (region && !barShown) return { x0: region.x0, y0: region.y0, x1: region.x1, y1: region.y1 };
    const info = (image && image.info) || {};
    return info.width ? { x0: 0, y0: 0, x1: info.width, y1: info.height } : null;
  }

  // The part of the frame the viewer shows, in full-resolution pixels.
  function viewRegion(bounds) {
    const viewer = image && image.viewer;
    const item = viewer && viewer.world.getItemAt(0);
    if (!item || !bounds) return null;
    const box = item.viewportToImageRectangle(viewer.viewport.getBounds(true));
    const x0 = Math.max(bounds.x0, Math.floor(box.x));
    const y0 = Math.max(bounds.y0, Math.floor(box.y));
    const x1 = Math.min(bounds.x1, Math.ceil(box.x + box.width));
    const y1 = Math.min(bounds.y1, Math.ceil(box.y + box.height));
    if (x1 <= x0 || y1 <= y0) return null;
    return { x: x0, y: y0, w: x1 - x0, h: y1 - y0 };
  }

  // Saved ROIs, as the measurement panel lists them: a figure may show one of them, framed.
  const roiChoice = document.getElementById("figure-area-roi");
  const roiSelect = document.getElementById("figure-roi");
  const roiNone = document.getElementById("figure-roi-none");
  const roisUrl = form.action.replace(/\/figure$/, "/rois");
  let rois = [];

  async function loadRois() {
    let found = [];
    try {
      const response = await fetch(roisUrl, { credentials: "same-origin" });
      if (response.ok) found = await response.json();
    } catch (error) {
      found = [];
    }
    rois = Array.isArray(found) ? found : [];
    const chosen = roiSelect.value;
    roiSelect.textContent = "";
    for (const roi of rois) {
      const option = document.createElement("option");
      option.value = roi.id;
      option.textContent = (roi.name || roi.kind) + (roi.name ? " (" + roi.kind + ")" : "");
      roiSelect.appendChild(option);
    }
    if (chosen) roiSelect.value = chosen;
    const wanted = roiChoice.checked;
    roiSelect.hidden = !wanted || rois.length === 0;
    roiNone.hidden = !wanted || rois.length > 0;
  }

  form.addEventListener("change", function (event) {
    if (event.target.name === "area") loadRois();
  });

  // A saved ROI's bounding box in full-resolution pixels, with a margin of a tenth of its size
  // (at least 8 px) so a line or a small region has some surroundings, kept within bounds.
  function roiRegion(bounds) {
    const roi = rois.find(function (r) { return r.id === roiSelect.value; });
    if (!roi || !bounds || !roi.points || !roi.points.length) return null;
    const xs = roi.points.map(function (p) { return p[0]; });
    const ys = roi.points.map(function (p) { return p[1]; });
    const margin = Math.max(8, 0.1 * Math.max(Math.max.apply(null, xs) - Math.min.apply(null, xs),
      Math.max.apply(null, ys) - Math.min.apply(null, ys)));
    const x0 = Math.max(bounds.x0, Math.floor(Math.min.apply(null, xs) - margin));
    const y0 = Math.max(bounds.y0, Math.floor(Math.min.apply(null, ys) - margin));
    const x1 = Math.min(bounds.x1, Math.ceil(Math.max.apply(null, xs) + margin));
    const y1 = Math.min(bounds.y1, Math.ceil(Math.max.apply(null, ys) + margin));
    if (x1 <= x0 || y1 <= y0) return null;
    return { x: x0, y: y0, w: x1 - x0, h: y1 - y0 };
  }

  // Native resolution, unless that is beyond the server's largest picture (info.json limits).
  function widthFor(region) {
    const info = (image && image.info) || {};
    const maxWidth = info.maxWidth || Infinity;
    const maxHeight = info.maxHeight || Infinity;
    const maxArea = info.maxArea || Infinity;
    const aspect = region.h / region.w;
    const fits = Math.min(region.w, maxWidth, maxHeight / aspect, Math.sqrt(maxArea / aspect));
    // One pixel less than the limit: the server rounds the height from the width.
    return fits >= region.w ? region.w : Math.max(1, Math.floor(fits) - 1);
  }

  function figureUrl() {
    const params = new URLSearchParams(image ? image.tileQuery().replace(/^\?/, "") : "");
    const data = new FormData(form);
    const area = data.get("area");
    const bounds = frame();
    let region = area === "view" ? viewRegion(bounds) : area === "roi" ? roiRegion(bounds) : null;
    if (!region && bounds) {
      region = { x: bounds.x0, y: bounds.y0, w: bounds.x1 - bounds.x0, h: bounds.y1 - bounds.y0 };
    }
    if (region) {
      params.set("region", [region.x, region.y, region.w, region.h].join(","));
      params.set("width", String(widthFor(region)));
    }
    params.set("format", String(data.get("format") || "png"));
    if (data.get("scalebar")) params.set("scalebar", "1");
    if (data.get("rois")) params.set("rois", "1");
    return form.action + "?" + params.toString();
  }

  function filenameOf(response) {
    const header = response.headers.get("content-disposition") || "";
    const exact = /filename\*=UTF-8''([^;]+)/i.exec(header);
    if (exact) return decodeURIComponent(exact[1]);
    const plain = /filename="([^"]+)"/i.exec(header);
    return plain ? plain[1] : "figure";
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    const url = figureUrl();
    form.dataset.lastUrl = url;
    button.disabled = true;
    note.textContent = "…";
    try {
      const response = await fetch(url, { credentials: "same-origin" });
      if (!response.ok) {
        let detail = response.statusText;
        try {
          detail = (await response.json()).detail || detail;
        } catch (error) {
          // not a problem document; the status text says enough
        }
        note.textContent = detail;
        return;
      }
      const blob = await response.blob();
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = filenameOf(response);
      document.body.appendChild(link);
      link.click();
      link.remove();
      setTimeout(function () { URL.revokeObjectURL(link.href); }, 60000);
      note.textContent = link.download;
    } catch (error) {
      note.textContent = String(error.message || error);
    } finally {
      button.disabled = false;
    }
  });
})();
