// The image page: OpenSeadragon over our IIIF endpoint, a calibrated scale bar, plane, channel
// and contrast controls that become tile-URL query parameters, capability links, metadata filter.
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

  // Lengths in the unit that gives a number of at least 1, like the metadata panel.
  const UNITS = [["m", 1], ["mm", 1e-3], ["µm", 1e-6], ["nm", 1e-9], ["pm", 1e-12]];
  function formatLength(metres) {
    for (const [unit, size] of UNITS) {
      if (metres >= size * 0.9999) {
        return numberFormat.format(Number((metres / size).toPrecision(6))) + " " + unit;
      }
    }
    return numberFormat.format(metres / 1e-12) + " pm";
  }

  // The largest 1, 2 or 5 × 10^n not above `limit`: scale bars read best at round lengths.
  function roundLength(limit) {
    const power = Math.pow(10, Math.floor(Math.log10(limit)));
    for (const step of [5, 2, 1]) {
      if (step * power <= limit) return step * power;
    }
    return power;
  }

  const TO_METRES = { m: 1, mm: 1e-3, um: 1e-6, "µm": 1e-6, nm: 1e-9, in: 0.0254, cm: 1e-2 };
  function metresPerPixel(info) {
    const services = [].concat(info.service || []);
    for (const service of services) {
      const profile = String(service.profile || "");
      if (profile.indexOf("physdim") >= 0 && service.physicalScale > 0) {
        const factor = TO_METRES[service.physicalUnits] || null;
        if (factor) return service.physicalScale * factor;
      }
    }
    return null;
  }

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
  let scale = null; // metres per full-resolution pixel
  let defaults = null; // the rendering the server picks without parameters
  let state = null; // what the controls show now
  let generation = 0;

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

  // Only what differs from the server's defaults goes into the URL, so untouched views share
  // cached tiles, and every change of window gives new URLs (and new ETags).
  function tileQuery() {
    const params = new URLSearchParams();
    if (state.z) params.set("z", String(state.z));
    if (state.t) params.set("t", String(state.t));
    const channels = state.channels;
    const base = defaults.channels;
    if (channels.length) {
      const visibility = channels.some(function (c, i) { return c.visible !== base[i].visible; });
      const windows = channels.some(function (c, i) { return c.lo !== base[i].lo || c.hi !== base[i].hi; });
      const colours = channels.some(function (c, i) { return c.color !== base[i].color; });
      if (visibility) {
        params.set("c", channels.map(function (c, i) { return c.visible ? i : null; })
          .filter(function (i) { return i !== null; }).join(","));
      }
      if (windows) {
        params.set("window", channels.map(function (c) {
          return compact(c.lo) + "," + compact(c.hi);
        }).join(";"));
      }
      if (colours) params.set("colors", channels.map(function (c) { return c.color; }).join(","));
    }
    if (state.gamma !== 1) params.set("gamma", String(state.gamma));
    if (state.cmap) params.set("cmap", state.cmap);
    const query = params.toString();
    return query ? "?" + query : "";
  }

  // Six significant digits are far below one grey level and keep URLs short and stable.
  function compact(value) {
    return String(Number(Number(value).toPrecision(6)));
  }

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
  function showRendering() {
    const query = tileQuery();
    document.dispatchEvent(new CustomEvent("allmicro:rendering", { detail: { query: query } }));
    generation += 1;
    const mine = generation;
    root.dataset.state = "loading";
    root.dataset.tileQuery = query;
    viewer.addTiledImage({
      tileSource: tileSource(query),
      index: viewer.world.getItemCount(),
      success: function (event) {
        const item = event.item;
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

  function buildPlaneControls(display) {
    const planes = document.getElementById("planes");
    const sizes = [["z", display.z_size, text.plane], ["t", display.t_size, text.timepoint]];
    for (const [axis, size, label] of sizes) {
      if (size > 1) {
        planes.appendChild(slider(axis, label + " (" + axis + ")", 0, size - 1, 1, 0,
          function (value) { state[axis] = value; }));
        planes.hidden = false;
      }
    }
  }

  function buildChannelControls(display) {
    const box = document.getElementById("channel-controls");
    const integer = !/float/.test(String(display.dtype || ""));
    state.channels.forEach(function (channel, index) {
      const span = (channel.max - channel.min) || 1;
      const step = integer ? Math.max(1, Math.round(span / 1000)) : span / 1000;
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
      rows.push(slider("window-lo-" + index, text.low, channel.min, channel.max, step, channel.lo,
        function (value) { channel.lo = Math.min(value, channel.hi); }));
      rows.push(slider("window-hi-" + index, text.high, channel.min, channel.max, step, channel.hi,
        function (value) { channel.hi = Math.max(value, channel.lo); }));
      box.appendChild(el("fieldset", { class: "channel" }, rows));
    });
    box.appendChild(slider("gamma", text.gamma, 0.2, 3, 0.05, 1,
      function (value) { state.gamma = value; }));
    if (state.channels.length === 1) {
      const select = el("select", { name: "cmap", "aria-label": text.colourMap });
      for (const name of ["", "viridis", "magma", "inferno"]) {
        select.appendChild(el("option", { value: name, text: name || "gray" }));
      }
      select.addEventListener("change", function () { state.cmap = select.value; changed(); });
      box.appendChild(el("label", { class: "slider" }, [el("span", { text: text.colourMap }), select]));
    }
    const reset = el("button", { type: "button", text: text.reset });
    reset.addEventListener("click", function () {
      const keep = { z: state.z, t: state.t };
      state = initialState(display);
      state.z = keep.z;
      state.t = keep.t;
      box.textContent = "";
      buildChannelControls(display);
      showRendering();
    });
    box.appendChild(reset);
  }

  async function startViewer() {
    if (!root) return;
    if (typeof OpenSeadragon === "undefined") {
      fail("OpenSeadragon");
      return;
    }
    let display = null;
    try {
      const both = await Promise.all([
        getJson(config.infoUrl),
        getJson(config.displayUrl).catch(function () { return null; }),
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
    // The scale bar lives inside the viewer element, over the canvas.
    viewer.container.appendChild(document.getElementById("scalebar"));
    for (const name of ["animation", "open", "resize", "update-viewport"]) {
      viewer.addHandler(name, updateScaleBar);
    }
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
      tileQuery: function () { return tileQuery(); },
      state: function () { return state; },
    };
    document.dispatchEvent(new CustomEvent("allmicro:viewer-ready", { detail: window.allmicroImage }));
    showRendering();
  }

  setUpVendorFilter();
  setUpCapabilities();
  // OpenSeadragon is loaded with `defer` before this script, so it is there by now.
  startViewer();
})();
