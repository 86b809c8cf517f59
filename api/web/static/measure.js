// The image page's measurement tools: shapes drawn over OpenSeadragon in an SVG overlay, in
// full-resolution pixel coordinates; lengths, angles, areas, region statistics and line profiles
// come from the server (full-resolution pixels, the data bar left out); ROIs saved on the image
// are drawn for everyone and listed in the panel. Built on window.allmicroImage (image.js).
(function () {
  "use strict";

  const panel = document.getElementById("measure-panel");
  const configNode = document.getElementById("measure-config");
  if (!panel || !configNode) return;
  const config = JSON.parse(configNode.textContent);
  const text = config.strings;
  const csrfNode = document.getElementById("csrf-token");
  const csrf = csrfNode ? JSON.parse(csrfNode.textContent) : "";
  const SVG = "http://www.w3.org/2000/svg";
  // How many points each tool takes; null: as many as placed, ended by "Finish".
  const POINTS = { line: 2, profile: 2, angle: 3, rectangle: 2, ellipse: 2, polyline: null, polygon: null };
  const LEAST = { polyline: 2, polygon: 3 };

  let image = null; // window.allmicroImage
  let overlay = null;
  let tool = null;
  let points = []; // the shape being drawn, full-resolution pixels
  let hover = null; // where the pointer is, for the rubber band
  let done = null; // the last finished shape: {kind, points}
  let saved = [];
  let language = document.documentElement.lang || "en";
  let numbers = new Intl.NumberFormat(language, { maximumSignificantDigits: 4 });

  const result = document.getElementById("measure-result");
  const finish = document.getElementById("measure-finish");
  const saveForm = document.getElementById("measure-save");
  const list = document.getElementById("measure-rois");
  const none = document.getElementById("measure-none");

  // ---------------------------------------------------------------- units

  // Lengths in nm, µm or Å chosen by magnitude (calibration.js).
  const unitFor = window.AllMicroCalibration.unitFor;
  function formatLength(value, calibrated) {
    if (!calibrated) return numbers.format(value) + " px";
    return window.AllMicroCalibration.formatLength(value, numbers);
  }
  function formatArea(value, calibrated) {
    if (!calibrated) return numbers.format(value) + " px²";
    const unit = unitFor(Math.sqrt(value));
    return numbers.format(value / (unit[1] * unit[1])) + " " + unit[0] + "²";
  }

  // ---------------------------------------------------------------- requests

  async function send(url, options) {
    const response = await fetch(url, Object.assign({
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf || "", Accept: "application/json", "Content-Type": "application/json" },
    }, options || {}));
    if (!response.ok) {
      let detail = "";
      try { detail = (await response.json()).detail || ""; } catch (error) { detail = ""; }
      throw new Error(detail || String(response.status));
    }
    return response.status === 204 ? null : response.json();
  }

  // The plane on screen and its first visible channel.
  function plane() {
    const state = image && typeof image.state === "function" ? image.state() : null;
    const out = { z: (state && state.z) || 0, t: (state && state.t) || 0 };
    const channels = (state && state.channels) || [];
    if (channels.length > 1) {
      const visible = channels.findIndex(function (c) { return c.visible; });
      out.c = visible < 0 ? 0 : visible;
    }
    return out;
  }

  // ---------------------------------------------------------------- the overlay

  function item() {
    return image.viewer.world.getItemAt(0);
  }

  function toScreen(p) {
    const at = item().imageToViewerElementCoordinates(new OpenSeadragon.Point(p[0], p[1]));
    return [at.x, at.y];
  }

  function toImage(position) {
    return clampToImage(item().viewerElementToImageCoordinates(position));
  }

  const ARROWS = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };

  function clampToImage(at) {
    const size = item().getContentSize();
    const clamp = function (v, hi) { return Math.round(Math.min(hi, Math.max(0, v)) * 100) / 100; };
    return [clamp(at.x, size.x), clamp(at.y, size.y)];
  }

  function node(tag, attributes) {
    const made = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) made.setAttribute(name, String(value));
    return made;
  }

  function drawShape(kind, shapePoints, className) {
    const screen = shapePoints.map(toScreen);
    const group = node("g", { class: className });
    if ((kind === "rectangle" || kind === "ellipse") && screen.length === 2) {
      const x0 = Math.min(screen[0][0], screen[1][0]);
      const y0 = Math.min(screen[0][1], screen[1][1]);
      const w = Math.abs(screen[1][0] - screen[0][0]);
      const h = Math.abs(screen[1][1] - screen[0][1]);
      group.appendChild(kind === "rectangle"
        ? node("rect", { x: x0, y: y0, width: w, height: h })
        : node("ellipse", { cx: x0 + w / 2, cy: y0 + h / 2, rx: w / 2, ry: h / 2 }));
    } else if (screen.length > 1) {
      const tag = kind === "polygon" && className !== "drawing" ? "polygon" : "polyline";
      group.appendChild(node(tag, { points: screen.map(function (p) { return p.join(","); }).join(" ") }));
    }
    for (const p of screen) group.appendChild(node("circle", { cx: p[0], cy: p[1], r: 3.5 }));
    return group;
  }

  function redraw() {
    if (!overlay || !item()) return;
    overlay.textContent = "";
    for (const roi of saved) overlay.appendChild(drawShape(roi.kind, roi.points, "saved"));
    if (done) overlay.appendChild(drawShape(done.kind === "profile" ? "line" : done.kind, done.points, "done"));
    if (tool && points.length) {
      const shown = hover ? points.concat([hover]) : points;
      overlay.appendChild(drawShape(tool === "profile" ? "line" : tool, shown, "drawing"));
    }
    if (tool) {
      // The keyboard's aim: Enter places a point here.
      const box = image.viewer.element.getBoundingClientRect();
      const cx = box.width / 2;
      const cy = box.height / 2;
      const cross = node("g", { class: "cross" });
      cross.appendChild(node("line", { x1: cx - 10, y1: cy, x2: cx + 10, y2: cy }));
      cross.appendChild(node("line", { x1: cx, y1: cy - 10, x2: cx, y2: cy + 10 }));
      overlay.appendChild(cross);
    }
  }

  // ---------------------------------------------------------------- drawing

  function choose(name) {
    tool = tool === name ? null : name;
    points = [];
    hover = null;
    for (const button of panel.querySelectorAll(".tool")) {
      button.setAttribute("aria-pressed", String(button.dataset.tool === tool));
    }
    finish.hidden = !(tool && POINTS[tool] === null);
    image.viewer.element.classList.toggle("measuring", Boolean(tool));
    redraw();
  }

  function place(p) {
    if (!tool) return;
    points.push(p);
    if (POINTS[tool] !== null && points.length >= POINTS[tool]) complete();
    else redraw();
  }

  function complete() {
    if (!tool) return;
    const least = LEAST[tool] || POINTS[tool];
    if (points.length < least) return;
    done = { kind: tool, points: points.slice() };
    points = [];
    hover = null;
    redraw();
    measure(done);
  }

  function cancel() {
    points = [];
    hover = null;
    redraw();
  }

  // ---------------------------------------------------------------- results

  function rows(entries) {
    const dl = document.createElement("dl");
    dl.className = "fields";
    for (const [label, value] of entries) {
      const dt = document.createElement("dt");
      dt.textContent = label;
      const dd = document.createElement("dd");
      dd.textContent = value;
      dl.append(dt, dd);
    }
    return dl;
  }

  function describe(m) {
    const entries = [];
    if (m.length !== null) entries.push([text.length, formatLength(m.length, m.calibrated)]);
    if (m.angle_deg !== null) entries.push([text.angle, numbers.format(m.angle_deg) + "°"]);
    if (m.area !== null) entries.push([text.area, formatArea(m.area, m.calibrated)]);
    if (m.pixels !== null) entries.push([text.pixels, numbers.format(m.pixels)]);
    for (const key of ["mean", "std", "min", "max"]) {
      if (m[key] !== null && m[key] !== undefined) entries.push([text[key], numbers.format(m[key])]);
    }
    return entries;
  }

  function show(entries) {
    result.textContent = "";
    result.appendChild(rows(entries));
  }

  async function measure(shape) {
    const profile = document.getElementById("measure-profile");
    profile.hidden = true;
    if (saveForm) saveForm.hidden = false;
    const kind = shape.kind === "profile" ? "line" : shape.kind;
    try {
      const m = await send(config.measureUrl, {
        method: "POST",
        body: JSON.stringify(Object.assign({ kind: kind, points: shape.points }, plane())),
      });
      result.dataset.length = m.length === null ? "" : String(m.length);
      show(describe(m));
      if (shape.kind === "profile") await plotProfile(shape.points, m.calibrated);
    } catch (error) {
      result.textContent = text.failed + " " + error.message;
    }
  }

  function profileQuery(p, format) {
    const params = new URLSearchParams({
      x0: String(p[0][0]), y0: String(p[0][1]), x1: String(p[1][0]), y1: String(p[1][1]),
    });
    const where = plane();
    for (const key of Object.keys(where)) if (where[key]) params.set(key, String(where[key]));
    if (format) params.set("format", format);
    return config.profileUrl + "?" + params.toString();
  }

  async function plotProfile(p, calibrated) {
    const found = await send(profileQuery(p));
    const samples = found.samples.filter(function (s) { return s.value !== null; });
    const svg = document.getElementById("measure-profile-plot");
    svg.textContent = "";
    if (samples.length > 1) {
      let low = Infinity;
      let high = -Infinity;
      for (const s of samples) { low = Math.min(low, s.value); high = Math.max(high, s.value); }
      const span = high - low || 1;
      const last = found.samples[found.samples.length - 1].distance || 1;
      const line = samples.map(function (s) {
        return (s.distance / last * 300).toFixed(2) + "," + (115 - (s.value - low) / span * 110).toFixed(2);
      }).join(" ");
      svg.appendChild(node("polyline", { points: line, class: "trace" }));
      document.getElementById("measure-profile-caption").textContent =
        text.distance + " 0 – " + formatLength(last, calibrated) + " · " + text.value + " " +
        numbers.format(low) + " – " + numbers.format(high);
    }
    const link = document.getElementById("measure-profile-csv");
    link.href = profileQuery(p, "csv");
    document.getElementById("measure-profile").hidden = false;
  }

  // ---------------------------------------------------------------- saved ROIs

  function kindLabel(kind) {
    return kind === "angle" ? text.angleKind : (text[kind] || kind);
  }

  function listSaved() {
    list.textContent = "";
    none.hidden = saved.length > 0;
    for (const roi of saved) {
      const li = document.createElement("li");
      const name = roi.name ? roi.name + " (" + kindLabel(roi.kind) + ")" : kindLabel(roi.kind);
      const summary = describe(roi.measurement).slice(0, 2).map(function (e) { return e[1]; }).join(" · ");
      const showButton = document.createElement("button");
      showButton.type = "button";
      showButton.className = "link";
      showButton.textContent = name;
      showButton.setAttribute("aria-label", text.show + ": " + name);
      showButton.addEventListener("click", function () {
        done = { kind: roi.kind, points: roi.points };
        redraw();
        measure(done);
      });
      const facts = document.createElement("span");
      facts.className = "facts";
      facts.textContent = summary;
      li.append(showButton, facts);
      if (config.canEdit) {
        const remove = document.createElement("button");
        remove.type = "button";
        remove.className = "link danger-link";
        remove.textContent = text.delete;
        remove.setAttribute("aria-label", text.delete + ": " + name);
        remove.addEventListener("click", async function () {
          try {
            await send(config.roisUrl + "/" + encodeURIComponent(roi.id), { method: "DELETE" });
            await load();
          } catch (error) {
            result.textContent = text.failed + " " + error.message;
          }
        });
        li.appendChild(remove);
      }
      list.appendChild(li);
    }
  }

  async function load() {
    try {
      saved = await send(config.roisUrl);
    } catch (error) {
      saved = [];
    }
    listSaved();
    redraw();
  }

  if (saveForm) {
    saveForm.addEventListener("submit", async function (event) {
      event.preventDefault();
      if (!done) return;
      const kind = done.kind === "profile" ? "line" : done.kind;
      const body = Object.assign({ kind: kind, points: done.points, name: saveForm.elements.name.value }, plane());
      try {
        await send(config.roisUrl, { method: "POST", body: JSON.stringify(body) });
        saveForm.elements.name.value = "";
        saveForm.hidden = true;
        await load();
      } catch (error) {
        result.textContent = text.failed + " " + error.message;
      }
    });
  }

  // ---------------------------------------------------------------- start

  function start(published) {
    if (image) return;
    image = published;
    language = (image.config && image.config.language) || language;
    numbers = new Intl.NumberFormat(language, { maximumSignificantDigits: 4 });
    const viewer = image.viewer;
    overlay = node("svg", { class: "measure-overlay", "aria-hidden": "true" });
    viewer.canvas.appendChild(overlay);
    for (const name of ["animation", "open", "resize", "update-viewport", "add-item-failed"]) {
      viewer.addHandler(name, redraw);
    }
    // Taps and clicks (OSD pointer events: mouse, pen, touch) place points; drags still pan.
    viewer.addHandler("canvas-click", function (event) {
      if (!tool || !event.quick || !item()) return;
      event.preventDefaultAction = true;
      place(toImage(event.position));
    });
    viewer.addHandler("canvas-double-click", function (event) {
      if (!tool || POINTS[tool] !== null) return;
      event.preventDefaultAction = true;
      complete();
    });
    viewer.canvas.addEventListener("pointermove", function (event) {
      if (!tool || !points.length || !item()) return;
      const box = viewer.element.getBoundingClientRect();
      hover = toImage(new OpenSeadragon.Point(event.clientX - box.left, event.clientY - box.top));
      redraw();
    });
    viewer.element.addEventListener("keydown", function (event) {
      if (!tool || !item()) return;
      if (event.key === "Enter") {
        event.preventDefault();
        // The centre the view is going to (the arrows below move it at once).
        const centre = viewer.viewport.getCenter(false);
        place(clampToImage(item().viewportToImageCoordinates(centre)));
      } else if (ARROWS[event.key] && !event.shiftKey && !event.ctrlKey && !event.altKey && !event.metaKey) {
        // While a tool places points, the arrow keys move the view by a step at once, instead
        // of OpenSeadragon's glide over the frames that follow a key: an Enter pressed right
        // after them then means where they took the view.
        event.preventDefault();
        event.stopPropagation();
        const step = viewer.viewport.deltaPointsFromPixels(
          new OpenSeadragon.Point(viewer.pixelsPerArrowPress, viewer.pixelsPerArrowPress));
        const [dx, dy] = ARROWS[event.key];
        viewer.viewport.panBy(new OpenSeadragon.Point(dx * step.x, dy * step.y));
        viewer.viewport.applyConstraints();
      } else if (event.key === "Escape") {
        event.preventDefault();
        if (points.length) cancel();
        else choose(tool);
      }
    }, true);
    for (const button of panel.querySelectorAll(".tool")) {
      button.addEventListener("click", function () { choose(button.dataset.tool); });
    }
    finish.addEventListener("click", complete);
    panel.dataset.ready = "true";
    load();
  }

  if (window.allmicroImage) start(window.allmicroImage);
  document.addEventListener("allmicro:viewer-ready", function (event) { start(event.detail); });
})();
