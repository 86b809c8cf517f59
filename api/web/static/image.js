// The image page: OpenSeadragon over our IIIF endpoint, a calibrated scale bar, plane, channel
// and contrast controls (histogram, auto-contrast, gamma, LUT, invert, log) that become tile-URL
// query parameters, the instrument's data bar hidden by default, the view kept in the address
// (a link reproduces it) and saved per user or as the image's default; capability links, the
// metadata filter. The share page's image view runs the same script without saving.
(function () {
  "use strict";

  const config = JSON.parse(document.getElementById("viewer-config").textContent);
  const csrf = JSON.parse(document.getElementById("csrf-token").textContent);
  const text = config.strings;
  const numberFormat = new Intl.NumberFormat(config.language, { maximumSignificantDigits: 4 });

  // ---------------------------------------------------------------- helpers

  function el(tag, attributes, children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (name === "text") node.textContent = value;
      else node.setAttribute(name, value);
    }
    for (const child of children || []) node.appendChild(child);
    return node;
  }

  async function getJson(url) {
    const response = await fetch(url, { credentials: "same-origin" });
    if (!response.ok) throw new Error(url + " answered " + response.status);
    return response.json();
  }

  // Lengths in the unit that reads best, scale-bar lengths and the physdim calibration, from
  // calibration.js; formatLength is exported for the page's other scripts
  // (allmicroImage.formatLength).
  const calibration = window.AllMicroCalibration;
  function formatLength(metres) {
    return calibration.formatLength(metres, numberFormat);
  }
  const roundLength = calibration.roundLength;
  const metresPerPixel = calibration.metresPerPixel;

  // ---------------------------------------------------------------- metadata filter

  function setUpVendorFilter() {
    const input = document.getElementById("vendor-filter");
    const tree = document.getElementById("vendor-tree");
    if (!input || !tree) return;
    const none = document.getElementById("vendor-none");
    const leaves = Array.from(tree.querySelectorAll("li.leaf"));
    const branches = Array.from(tree.querySelectorAll("li.branch"));
    input.addEventListener("input", function () {
      const needle = input.value.trim().toLowerCase();
      let shown = 0;
      for (const leaf of leaves) {
        const hit = !needle || leaf.dataset.path.toLowerCase().includes(needle) ||
          leaf.textContent.toLowerCase().includes(needle);
        leaf.hidden = !hit;
        if (hit) shown += 1;
      }
      // Deepest branches first, so a parent sees whether any child is still visible.
      for (const branch of branches.slice().reverse()) {
        const visible = branch.querySelector("li.leaf:not([hidden])") !== null ||
          (needle && branch.dataset.path.toLowerCase().includes(needle));
        branch.hidden = !visible;
        if (needle && visible) branch.querySelector("details").open = true;
      }
      none.hidden = shown > 0;
    });
  }

  // ---------------------------------------------------------------- capability links

  function setUpCapabilities() {
    const button = document.getElementById("make-link");
    if (!button) return;
    const result = document.getElementById("link-result");
    const vizarr = document.getElementById("vizarr-link");
    const napari = document.getElementById("napari-command");
    const expiry = document.getElementById("link-expiry");
    button.addEventListener("click", async function () {
      button.disabled = true;
      try {
        const response = await fetch(config.capabilitiesUrl, {
          method: "POST",
          credentials: "same-origin",
          headers: {
            "X-CSRF-Token": csrf || "",
            Accept: "application/json",
            "Content-Type": "application/json",
          },
          body: "{}", // the server's default lifetime
        });
        if (!response.ok) throw new Error("capabilities answered " + response.status);
        const link = await response.json();
        vizarr.href = "https://hms-dbmi.github.io/vizarr/?source=" + encodeURIComponent(link.url);
        napari.value = "napari --plugin napari-ome-zarr '" + link.url + "'";
        expiry.textContent = text.expires + ": " +
          new Date(link.expires_at).toLocaleString(config.language);
        result.hidden = false;
      } catch (error) {
        expiry.textContent = text.linkFailed;
        result.hidden = false;
      } finally {
        button.disabled = false;
      }
    });
    document.getElementById("copy-napari").addEventListener("click", async function (event) {
      try {
        await navigator.clipboard.writeText(napari.value);
        event.target.textContent = text.copied;
      } catch (error) {
        napari.select();
      }
    });
  }

  // ---------------------------------------------------------------- the viewer

  const root = document.getElementById("viewer");
  const message = document.getElementById("viewer-message");
  let viewer = null;
  let info = null;
  let display = null;
  let scale = null; // metres per full-resolution pixel
  let defaults = null; // the rendering the server picks without parameters
  let state = null; // what the controls show now
  let region = null; // the sample's part of the frame, when a data bar is burnt in
  let generation = 0;
  const histograms = []; // per channel, for the current plane
  const redraws = []; // per channel: redraw its histogram and inputs from the state

  function fail(reason) {
    root.dataset.state = "failed";
    message.textContent = text.viewerFailed + (reason ? " (" + reason + ")" : "");
    message.hidden = false;
  }

  function initialState(display) {
    const channels = (display && display.channels) || [];
    return {
      z: 0,
      t: 0,
      gamma: 1,
      cmap: "",
      invert: false,
      log: false,
      dataBar: false,
      channels: channels.map(function (channel) {
        const window = channel.window || {};
        return {
          label: channel.label,
          visible: channel.active !== false,
          color: String(channel.color || "FFFFFF").replace("#", "").toUpperCase(),
          lo: window.start,
          hi: window.end,
          min: window.min,
          max: window.max,
        };
      }),
    };
  }

  // The display as tile query parameters. `full`: every setting (what is saved); otherwise only
  // what differs from the server's defaults, so untouched views share cached tiles, and every
  // change of window gives new URLs (and new ETags).
  function displayParams(full) {
    const params = new URLSearchParams();
    const channels = state.channels;
    const base = defaults.channels;
    if (channels.length) {
      const visibility = channels.some(function (c, i) { return c.visible !== base[i].visible; });
      const windows = channels.some(function (c, i) { return c.lo !== base[i].lo || c.hi !== base[i].hi; });
      const colours = channels.some(function (c, i) { return c.color !== base[i].color; });
      if (visibility || (full && channels.length > 1)) {
        params.set("c", channels.map(function (c, i) { return c.visible ? i : null; })
          .filter(function (i) { return i !== null; }).join(","));
      }
      if (windows || full) {
        params.set("window", channels.map(function (c) {
          return compact(c.lo) + "," + compact(c.hi);
        }).join(";"));
      }
      if (colours) params.set("colors", channels.map(function (c) { return c.color; }).join(","));
    }
    if (state.gamma !== 1) params.set("gamma", String(state.gamma));
    if (state.cmap) params.set("cmap", state.cmap);
    if (state.invert) params.set("invert", "1");
    if (state.log) params.set("log", "1");
    return params;
  }

  function tileQuery() {
    const params = new URLSearchParams();
    if (state.z) params.set("z", String(state.z));
    if (state.t) params.set("t", String(state.t));
    for (const [name, value] of displayParams(false)) params.set(name, value);
    const query = params.toString();
    return query ? "?" + query : "";
  }

  // Six significant digits are far below one grey level and keep URLs short and stable.
  function compact(value) {
    return String(Number(Number(value).toPrecision(6)));
  }

  function yes(value) {
    return value === true || value === "1" || value === "true";
  }

  // Settings from a link or saved on the server (the tile parameters' names and syntax) onto
  // the state; what they do not name stays as it is.
  function applySettings(source) {
    const get = function (name) {
      if (typeof source.get === "function") return source.get(name);
      const value = source[name];
      return value === undefined || value === null ? null : String(value);
    };
    const channels = state.channels;
    const integer = function (value, size) {
      const n = parseInt(value, 10);
      return n >= 0 && n < size ? n : 0;
    };
    if (get("z") !== null) state.z = integer(get("z"), display.z_size);
    if (get("t") !== null) state.t = integer(get("t"), display.t_size);
    if (get("c") !== null) {
      const shown = get("c").split(",").filter(Boolean).map(Number);
      channels.forEach(function (c, i) { c.visible = shown.indexOf(i) >= 0; });
    }
    if (get("window") !== null) {
      get("window").split(";").forEach(function (part, i) {
        const pair = part.split(",").map(Number);
        if (channels[i] && pair.length === 2 && isFinite(pair[0]) && isFinite(pair[1]) &&
            pair[0] < pair[1]) {
          channels[i].lo = pair[0];
          channels[i].hi = pair[1];
        }
      });
    }
    if (get("colors") !== null) {
      get("colors").split(",").forEach(function (colour, i) {
        if (channels[i] && /^#?[0-9a-fA-F]{6}$/.test(colour)) {
          channels[i].color = colour.replace("#", "").toUpperCase();
        }
      });
    }
    if (get("gamma") !== null && Number(get("gamma")) > 0) state.gamma = Number(get("gamma"));
    if (get("cmap") !== null) state.cmap = get("cmap") === "gray" ? "" : get("cmap");
    if (get("invert") !== null) state.invert = yes(get("invert"));
    if (get("log") !== null) state.log = yes(get("log"));
    if (get("bar") !== null) state.dataBar = yes(get("bar"));
  }

  // ---------------------------------------------------------------- the view in the address

  const VIEW_KEYS = ["z", "t", "c", "window", "colors", "gamma", "cmap", "invert", "log", "bar",
    "x", "y", "zoom"];

  function linkedView() {
    const params = new URLSearchParams(window.location.hash.replace(/^#/, ""));
    return VIEW_KEYS.some(function (key) { return params.has(key); }) ? params : null;
  }

  let addressPending = null;
  function updateAddress() {
    clearTimeout(addressPending);
    addressPending = setTimeout(function () {
      if (!viewer || !state) return;
      const params = new URLSearchParams(tileQuery().replace(/^\?/, ""));
      if (state.dataBar) params.set("bar", "1");
      const centre = viewer.viewport.getCenter(false);
      params.set("x", centre.x.toFixed(5));
      params.set("y", centre.y.toFixed(5));
      params.set("zoom", Number(viewer.viewport.getZoom(false).toPrecision(5)).toString());
      const address = window.location.pathname + window.location.search + "#" + params.toString();
      window.history.replaceState(window.history.state, "", address);
      root.dataset.view = params.toString();
    }, 150);
  }

  function restorePosition(params) {
    const x = Number(params.get("x"));
    const y = Number(params.get("y"));
    const zoom = Number(params.get("zoom"));
    if (!(zoom > 0) || !isFinite(x) || !isFinite(y)) return;
    viewer.viewport.zoomTo(zoom, null, true);
    viewer.viewport.panTo(new OpenSeadragon.Point(x, y), true);
    viewer.viewport.applyConstraints(true);
  }

  // ---------------------------------------------------------------- the data bar

  function regionRect() {
    return new OpenSeadragon.Rect(region.x0, region.y0, region.x1 - region.x0, region.y1 - region.y0);
  }

  function applyClip(item) {
    if (region) item.setClip(state.dataBar ? null : regionRect());
  }

  // With the data bar hidden, "home" (and the first view) is the sample's part of the frame.
  function installHomeBounds() {
    const world = viewer.world;
    const plain = world.getHomeBounds.bind(world);
    world.getHomeBounds = function () {
      const item = world.getItemAt(0);
      if (!region || state.dataBar || !item) return plain();
      return item.imageToViewportRectangle(regionRect());
    };
  }

  function showDataBar(shown) {
    state.dataBar = shown;
    for (let i = 0; i < viewer.world.getItemCount(); i += 1) applyClip(viewer.world.getItemAt(i));
    viewer.world.raiseEvent("metrics-change", {});
    // The whole frame, or the sample alone: the bar is below what a fitted view shows.
    viewer.viewport.goHome(true);
    root.dataset.dataBar = shown ? "shown" : "hidden";
    viewer.forceRedraw();
    updateAddress();
  }

  // ---------------------------------------------------------------- tiles

  function tileSource(query) {
    // configure() normalises the info.json (IIIF version, formats) and mutates it: give a copy.
    const options = OpenSeadragon.IIIFTileSource.prototype.configure(
      JSON.parse(JSON.stringify(info)), config.infoUrl, null);
    const source = new OpenSeadragon.IIIFTileSource(options);
    const plainUrl = source.getTileUrl;
    source.getTileUrl = function (level, x, y) {
      return plainUrl.call(this, level, x, y) + query;
    };
    return source;
  }

  // A new rendering is drawn over the old one and replaces it once all its tiles are in, so the
  // picture never goes blank while a slider moves.
  function showRendering(then) {
    const query = tileQuery();
    document.dispatchEvent(new CustomEvent("allmicro:rendering", { detail: { query: query } }));
    generation += 1;
    const mine = generation;
    root.dataset.state = "loading";
    root.dataset.tileQuery = query;
    updateAddress();
    viewer.addTiledImage({
      tileSource: tileSource(query),
      index: viewer.world.getItemCount(),
      clip: region && !state.dataBar ? regionRect() : undefined,
      success: function (event) {
        const item = event.item;
        applyClip(item);
        if (then) then(item);
        const loaded = function () {
          if (!item.getFullyLoaded()) return;
          item.removeHandler("fully-loaded-change", loaded);
          const index = viewer.world.getIndexOfItem(item);
          for (let i = index - 1; i >= 0; i -= 1) viewer.world.removeItem(viewer.world.getItemAt(i));
          if (mine === generation) root.dataset.state = "loaded";
          updateScaleBar();
        };
        item.addHandler("fully-loaded-change", loaded);
        loaded();
      },
      error: function () { fail("tiles"); },
    });
  }

  let pending = null;
  function changed() {
    // Sliders fire many events per second; ask the server once the hand rests.
    clearTimeout(pending);
    pending = setTimeout(showRendering, 200);
  }

  function updateScaleBar() {
    const box = document.getElementById("scalebar");
    const item = viewer && viewer.world.getItemAt(0);
    if (!item || !scale) return;
    const screenPerImage = item.viewportToImageZoom(viewer.viewport.getZoom(true));
    if (!(screenPerImage > 0)) return;
    const metresPerScreenPixel = scale / screenPerImage;
    const length = roundLength(metresPerScreenPixel * 150);
    const pixels = length / metresPerScreenPixel;
    document.getElementById("scalebar-bar").style.width = pixels.toFixed(2) + "px";
    document.getElementById("scalebar-label").textContent = formatLength(length);
    box.dataset.metres = String(length);
    box.hidden = false;
  }

  // ---------------------------------------------------------------- controls

  function slider(name, label, min, max, step, value, onInput) {
    const input = el("input", {
      type: "range", name: name, min: String(min), max: String(max), step: String(step),
      value: String(value), "aria-label": label,
    });
    const output = el("output", { text: numberFormat.format(value) });
    input.addEventListener("input", function () {
      output.textContent = numberFormat.format(Number(input.value));
      onInput(Number(input.value));
      changed();
    });
    return el("label", { class: "slider" }, [el("span", { text: label }), input, output]);
  }

  function checkbox(name, label, checked, onChange) {
    const input = el("input", { type: "checkbox", name: name });
    input.checked = checked;
    input.addEventListener("change", function () { onChange(input.checked); });
    return el("label", { class: "check" }, [input, el("span", { text: " " + label })]);
  }

  function buildPlaneControls(display) {
    const planes = document.getElementById("planes");
    const sizes = [["z", display.z_size, text.plane], ["t", display.t_size, text.timepoint]];
    for (const [axis, size, label] of sizes) {
      if (size > 1) {
        planes.appendChild(slider(axis, label + " (" + axis + ")", 0, size - 1, 1, state[axis],
          function (value) {
            state[axis] = value;
            loadHistograms();
          }));
        planes.hidden = false;
      }
    }
  }

  // The slider's span: the data's range (from the histogram) and the window, not the dtype's.
  const heldSpans = []; // per channel while a handle is dragged: the scale must not move
  function spanOf(index) {
    if (heldSpans[index]) return heldSpans[index];
    const channel = state.channels[index];
    const found = histograms[index];
    // Before the histogram is in, the dtype's range; the window always fits (lo < hi).
    const lo = found ? found.min : channel.min;
    const hi = found ? found.max : channel.max;
    return [Math.min(lo, channel.lo), Math.max(hi, channel.hi)];
  }

  function drawHistogram(canvas, index) {
    const channel = state.channels[index];
    const found = histograms[index];
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== width) canvas.width = width;
    if (canvas.height !== height) canvas.height = height;
    const context = canvas.getContext("2d");
    context.clearRect(0, 0, width, height);
    const [lo, hi] = spanOf(index);
    const xOf = function (value) { return (value - lo) / (hi - lo || 1) * width; };
    if (found && found.counts.length) {
      // Counts on a log scale: the few bright pixels of a dark image still show.
      const top = Math.log1p(Math.max.apply(null, found.counts)) || 1;
      const binWidth = (found.end - found.start) / found.counts.length;
      context.fillStyle = "#5b6b7f";
      found.counts.forEach(function (count, i) {
        if (!count) return;
        const x0 = xOf(found.start + i * binWidth);
        const x1 = Math.max(x0 + 1, xOf(found.start + (i + 1) * binWidth));
        const h = Math.log1p(count) / top * (height - 2);
        context.fillRect(x0, height - h, x1 - x0, h);
      });
    }
    // Outside the window is clipped to black or white: shaded.
    const a = xOf(channel.lo);
    const b = xOf(channel.hi);
    context.fillStyle = "rgba(0, 0, 0, 0.18)";
    context.fillRect(0, 0, Math.max(0, a), height);
    context.fillRect(b, 0, Math.max(0, width - b), height);
    // The transfer curve from the window's start to its end, as the tiles apply it.
    context.strokeStyle = "#c0392b";
    context.lineWidth = Math.max(1, ratio);
    context.beginPath();
    for (let i = 0; i <= 32; i += 1) {
      let f = i / 32;
      if (state.log) f = Math.log1p(f * Math.max(channel.hi - channel.lo, 1000)) /
        Math.log1p(Math.max(channel.hi - channel.lo, 1000));
      f = Math.pow(f, 1 / state.gamma);
      const x = a + (b - a) * i / 32;
      const y = height - 1 - f * (height - 2);
      if (i === 0) context.moveTo(x, y); else context.lineTo(x, y);
    }
    context.stroke();
    context.fillStyle = "#1f5fa8";
    for (const x of [a, b]) context.fillRect(Math.round(x) - ratio, 0, 2 * ratio, height);
  }

  // Dragging on the histogram moves the nearer end of the window.
  function dragHandles(canvas, index, update) {
    let dragging = null;
    const valueAt = function (event) {
      const box = canvas.getBoundingClientRect();
      const [lo, hi] = spanOf(index);
      const f = Math.min(1, Math.max(0, (event.clientX - box.left) / (box.width || 1)));
      return lo + f * (hi - lo);
    };
    canvas.addEventListener("pointerdown", function (event) {
      const channel = state.channels[index];
      const value = valueAt(event);
      dragging = Math.abs(value - channel.lo) <= Math.abs(value - channel.hi) ? "lo" : "hi";
      heldSpans[index] = spanOf(index);
      canvas.setPointerCapture(event.pointerId);
      event.preventDefault();
      move(event);
    });
    const move = function (event) {
      if (!dragging) return;
      const channel = state.channels[index];
      const integer = !/float/.test(String(display.dtype || ""));
      let value = valueAt(event);
      if (integer) value = Math.round(value);
      const gap = integer ? 1 : (channel.hi - channel.lo) / 1000 || 1e-6;
      if (dragging === "lo") channel.lo = Math.min(value, channel.hi - gap);
      else channel.hi = Math.max(value, channel.lo + gap);
      update();
      changed();
    };
    canvas.addEventListener("pointermove", move);
    const stop = function () {
      dragging = null;
      heldSpans[index] = null;
      update();
    };
    canvas.addEventListener("pointerup", stop);
    canvas.addEventListener("pointercancel", stop);
  }

  // The server's pick (0.1 and 99.9 percentiles of the sample, the data bar left out).
  function autoContrast(index) {
    const found = histograms[index];
    if (!found || !found.auto) return false;
    const lo = found.auto[0];
    const hi = found.auto[1];
    if (!(hi > lo)) return false;
    state.channels[index].lo = lo;
    state.channels[index].hi = hi;
    return true;
  }

  function buildChannelControls(display) {
    const box = document.getElementById("channel-controls");
    const integer = !/float/.test(String(display.dtype || ""));
    redraws.length = 0;
    state.channels.forEach(function (channel, index) {
      const title = state.channels.length > 1
        ? text.channel + " " + index + (channel.label ? ": " + channel.label : "")
        : text.contrast;
      const rows = [el("legend", { text: title })];
      if (state.channels.length > 1) {
        const visible = el("input", { type: "checkbox", name: "visible-" + index });
        visible.checked = channel.visible;
        visible.addEventListener("change", function () { channel.visible = visible.checked; changed(); });
        const colour = el("input", { type: "color", name: "color-" + index, value: "#" + channel.color });
        colour.addEventListener("input", function () {
          channel.color = colour.value.replace("#", "").toUpperCase();
          changed();
        });
        rows.push(el("div", { class: "row" }, [
          el("label", {}, [visible, el("span", { text: " " + text.visible })]),
          el("label", {}, [el("span", { text: text.colour + " " }), colour]),
        ]));
      }
      const canvas = el("canvas", {
        class: "histogram", "data-channel": String(index), role: "img",
        "aria-label": text.histogram + (state.channels.length > 1 ? " " + index : ""),
      });
      rows.push(canvas);
      const step = integer ? "1" : "any";
      const low = el("input", { type: "number", name: "window-lo-" + index, step: step, "aria-label": text.low });
      const high = el("input", { type: "number", name: "window-hi-" + index, step: step, "aria-label": text.high });
      const lowSlider = el("input", { type: "range", name: "window-lo-slider-" + index, "aria-label": text.low });
      const highSlider = el("input", { type: "range", name: "window-hi-slider-" + index, "aria-label": text.high });
      const auto = el("button", { type: "button", class: "auto", name: "auto-" + index, text: text.auto });
      // `typing`: the numbers came from the inputs, which keep what the person typed.
      const update = function (typing) {
        const [lo, hi] = spanOf(index);
        const sliderStep = integer ? Math.max(1, Math.round((hi - lo) / 1000)) : (hi - lo) / 1000;
        for (const range of [lowSlider, highSlider]) {
          range.min = String(lo);
          range.max = String(hi);
          range.step = String(sliderStep || "any");
        }
        lowSlider.value = String(channel.lo);
        highSlider.value = String(channel.hi);
        if (typing !== true) {
          low.value = compact(channel.lo);
          high.value = compact(channel.hi);
        }
        drawHistogram(canvas, index);
      };
      const typed = function () {
        const lo = Number(low.value);
        const hi = Number(high.value);
        if (low.value === "" || high.value === "" || !isFinite(lo) || !isFinite(hi) || lo >= hi) return;
        channel.lo = lo;
        channel.hi = hi;
        update(true);
        changed();
      };
      low.addEventListener("input", typed);
      high.addEventListener("input", typed);
      lowSlider.addEventListener("input", function () {
        channel.lo = Math.min(Number(lowSlider.value), channel.hi - (integer ? 1 : 0));
        update();
        changed();
      });
      highSlider.addEventListener("input", function () {
        channel.hi = Math.max(Number(highSlider.value), channel.lo + (integer ? 1 : 0));
        update();
        changed();
      });
      auto.addEventListener("click", function () {
        if (autoContrast(index)) {
          update();
          showRendering();
        }
      });
      dragHandles(canvas, index, update);
      rows.push(el("div", { class: "window-numbers" }, [
        el("label", {}, [el("span", { text: text.low }), low]),
        el("label", {}, [el("span", { text: text.high }), high]),
        auto,
      ]));
      rows.push(el("div", { class: "window-sliders" }, [lowSlider, highSlider]));
      box.appendChild(el("fieldset", { class: "channel" }, rows));
      redraws[index] = update;
      update();
    });
    if (state.channels.length > 1) {
      const all = el("button", { type: "button", name: "auto-all", text: text.autoAll });
      all.addEventListener("click", function () {
        let any = false;
        state.channels.forEach(function (c, i) { any = autoContrast(i) || any; });
        if (any) {
          redrawAll();
          showRendering();
        }
      });
      box.appendChild(all);
    }
    box.appendChild(slider("gamma", text.gamma, 0.2, 3, 0.05, state.gamma,
      function (value) { state.gamma = value; redrawAll(); }));
    if (state.channels.length === 1) {
      const select = el("select", { name: "cmap", "aria-label": text.colourMap });
      for (const name of ["", "viridis", "magma", "inferno", "fire"]) {
        select.appendChild(el("option", { value: name, text: name || "gray" }));
      }
      select.value = state.cmap;
      select.addEventListener("change", function () { state.cmap = select.value; changed(); });
      box.appendChild(el("label", { class: "slider" }, [el("span", { text: text.colourMap }), select]));
    }
    const toggles = [
      checkbox("invert", text.invert, state.invert, function (on) { state.invert = on; redrawAll(); changed(); }),
      checkbox("log", text.log, state.log, function (on) { state.log = on; redrawAll(); changed(); }),
    ];
    if (region) {
      toggles.push(checkbox("data-bar", text.dataBar, state.dataBar, showDataBar));
    }
    box.appendChild(el("div", { class: "toggles" }, toggles));
    const reset = el("button", { type: "button", name: "reset", text: text.reset });
    reset.addEventListener("click", function () {
      const keep = { z: state.z, t: state.t, dataBar: state.dataBar };
      state = initialState(display);
      Object.assign(state, keep);
      rebuildControls();
      showRendering();
    });
    box.appendChild(reset);
    buildSaveControls(box);
  }

  function redrawAll() {
    for (const redraw of redraws) if (redraw) redraw();
  }

  function rebuildControls() {
    const box = document.getElementById("channel-controls");
    box.textContent = "";
    buildChannelControls(display);
  }

  // The histograms of the current plane; the controls follow as each arrives.
  let histogramGeneration = 0;
  function loadHistograms() {
    if (!config.histogramUrl || !display || display.rgb) return Promise.resolve();
    histogramGeneration += 1;
    const mine = histogramGeneration;
    return Promise.all(state.channels.map(function (channel, index) {
      const url = config.histogramUrl + "?z=" + state.z + "&t=" + state.t + "&c=" + index;
      return getJson(url).then(function (found) {
        if (mine !== histogramGeneration) return;
        histograms[index] = found;
        if (redraws[index]) redraws[index]();
      }).catch(function () { return null; });
    })).then(function () {
      if (mine === histogramGeneration) root.dataset.histograms = "loaded";
    });
  }

  // ---------------------------------------------------------------- saved settings

  let saved = { image: null, mine: null };

  async function loadSaved() {
    if (!config.renderingUrl) return;
    const both = await Promise.all([
      getJson(config.renderingUrl).catch(function () { return null; }),
      getJson(config.renderingUrl + "/mine").catch(function () { return null; }),
    ]);
    saved = { image: both[0], mine: both[1] };
  }

  async function save(url, method) {
    const status = document.getElementById("rendering-status");
    status.textContent = "";
    const body = {};
    for (const [name, value] of displayParams(true)) {
      body[name] = name === "gamma" ? Number(value) : (name === "invert" || name === "log") ? true : value;
    }
    try {
      const response = await fetch(url, {
        method: method,
        credentials: "same-origin",
        headers: {
          "X-CSRF-Token": csrf || "",
          Accept: "application/json",
          "Content-Type": "application/json",
        },
        body: method === "PUT" ? JSON.stringify(body) : undefined,
      });
      if (!response.ok) throw new Error(url + " answered " + response.status);
      status.textContent = method === "PUT" ? text.saved : text.removed;
    } catch (error) {
      status.textContent = text.saveFailed;
    }
  }

  function buildSaveControls(box) {
    if (!config.renderingUrl) return;
    const buttons = [];
    const add = function (name, label, url, method) {
      const button = el("button", { type: "button", name: name, text: label });
      button.addEventListener("click", async function () {
        button.disabled = true;
        await save(url, method);
        button.disabled = false;
      });
      buttons.push(button);
    };
    if (saved.mine && saved.mine.may_edit) {
      add("save-mine", text.saveMine, config.renderingUrl + "/mine", "PUT");
      add("forget-mine", text.forgetMine, config.renderingUrl + "/mine", "DELETE");
    }
    if (saved.image && saved.image.may_edit) {
      add("save-default", text.saveDefault, config.renderingUrl, "PUT");
      add("remove-default", text.removeDefault, config.renderingUrl, "DELETE");
    }
    if (!buttons.length) return;
    box.appendChild(el("div", { class: "saving" }, buttons.concat([
      el("p", { class: "facts", id: "rendering-status", role: "status" }),
    ])));
  }

  // ---------------------------------------------------------------- start

  async function startViewer() {
    if (!root) return;
    if (typeof OpenSeadragon === "undefined") {
      fail("OpenSeadragon");
      return;
    }
    try {
      const both = await Promise.all([
        getJson(config.infoUrl),
        getJson(config.displayUrl).catch(function () { return null; }),
        loadSaved(),
      ]);
      info = both[0];
      display = both[1];
    } catch (error) {
      fail(error.message);
      return;
    }
    scale = metresPerPixel(info);
    defaults = initialState(display);
    state = initialState(display);
    const bounds = display && display.image_region;
    if (bounds && bounds.length === 4 && bounds[1] > bounds[0] && bounds[3] > bounds[2]) {
      region = { y0: bounds[0], y1: bounds[1], x0: bounds[2], x1: bounds[3] };
    }
    // What the view opens with: a link's view, else the viewer's own, else the image's
    // default, else the server's.
    const linked = linkedView();
    if (display) {
      // Each is a whole view, never laid over another.
      const chosen = linked || (saved.mine && saved.mine.settings) ||
        (saved.image && saved.image.settings);
      if (chosen) applySettings(chosen);
    }
    viewer = OpenSeadragon({
      element: root,
      prefixUrl: config.osdImages,
      // The canvas drawer works everywhere, including browsers without WebGL.
      drawer: "canvas",
      showNavigator: true,
      navigatorPosition: "TOP_RIGHT",
      maxZoomPixelRatio: 8,
      visibilityRatio: 0.5,
      crossOriginPolicy: false,
      // Past 1:1 a microscopist wants to see the pixels, not an interpolated blur.
      imageSmoothingEnabled: false,
      showRotationControl: false,
      gestureSettingsMouse: { clickToZoom: false },
    });
    installHomeBounds();
    root.dataset.dataBar = region ? (state.dataBar ? "shown" : "hidden") : "none";
    // The scale bar lives inside the viewer element, over the canvas.
    viewer.container.appendChild(document.getElementById("scalebar"));
    for (const name of ["animation", "open", "resize", "update-viewport"]) {
      viewer.addHandler(name, updateScaleBar);
    }
    viewer.addHandler("viewport-change", updateAddress);
    if (!scale) {
      message.textContent = text.noCalibration;
      message.hidden = false;
    }
    if (display) {
      buildPlaneControls(display);
      buildChannelControls(display);
    }
    window.allmicroViewer = viewer;
    // What the page's other scripts (measurements, figures) build on. They listen for
    // "allmicro:viewer-ready" and "allmicro:rendering" (detail.query) on document.
    window.allmicroImage = {
      viewer: viewer,
      config: config,
      info: info,
      display: display,
      metresPerPixel: scale,
      // The sample's part of the frame in full-resolution pixels (null: all of it); the data
      // bar below it is left out of histograms, contrast and measurements.
      imageRegion: region ? {
        y0: region.y0, y1: region.y1, x0: region.x0, x1: region.x1,
        x: region.x0, y: region.y0, width: region.x1 - region.x0, height: region.y1 - region.y0,
      } : null,
      dataBarShown: function () { return !!(region && state.dataBar); },
      formatLength: formatLength,
      tileQuery: function () { return tileQuery(); },
      state: function () { return state; },
    };
    document.dispatchEvent(new CustomEvent("allmicro:viewer-ready", { detail: window.allmicroImage }));
    showRendering(function (item) {
      if (viewer.world.getIndexOfItem(item) !== 0) return;
      viewer.viewport.goHome(true);
      if (linked) restorePosition(linked);
    });
    loadHistograms();
    window.addEventListener("resize", redrawAll);
  }

  setUpVendorFilter();
  setUpCapabilities();
  // OpenSeadragon is loaded with `defer` before this script, so it is there by now.
  startViewer();
})();
