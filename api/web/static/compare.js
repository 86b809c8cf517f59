// The compare page: one OpenSeadragon viewer per image, each with its calibrated scale bar, and
// linked pan and zoom. When every image has a pixel size the viewers show the same physical
// offset from each image's centre at the same physical scale (a micrometre is as long on screen
// in each); otherwise the same relative place (a fraction of each image's width and height) at
// the same relative zoom.
(function () {
  "use strict";

  const config = JSON.parse(document.getElementById("compare-config").textContent);
  const numberFormat = new Intl.NumberFormat(config.language, { maximumSignificantDigits: 4 });
  const calibration = window.AllMicroCalibration;
  const panels = [];
  let leader = 0;
  let following = false;

  const metresPerPixel = calibration.metresPerPixel;
  const roundLength = calibration.roundLength;
  function formatLength(metres) {
    return calibration.formatLength(metres, numberFormat);
  }

  function physical() {
    return panels.length > 1 && panels.every(function (p) { return p.scale && p.item; });
  }

  // Where a viewer looks: its centre in image pixels and its zoom in screen pixels per image
  // pixel, or in metres and screen pixels per metre when the images are calibrated.
  function viewOf(panel) {
    const viewport = panel.viewer.viewport;
    const item = panel.item;
    const centre = item.viewportToImageCoordinates(viewport.getCenter(true));
    const zoom = item.viewportToImageZoom(viewport.getZoom(true));
    const size = item.getContentSize();
    if (physical()) {
      // Metres from the image's centre: images of different fields line up at their middles.
      return {
        x: (centre.x - size.x / 2) * panel.scale,
        y: (centre.y - size.y / 2) * panel.scale,
        zoom: zoom / panel.scale,
      };
    }
    return { x: centre.x / size.x, y: centre.y / size.y, zoom: viewport.getZoom(true) };
  }

  function show(panel, view) {
    const viewport = panel.viewer.viewport;
    const item = panel.item;
    const size = item.getContentSize();
    let centre;
    let zoom;
    if (physical()) {
      centre = item.imageToViewportCoordinates(
        view.x / panel.scale + size.x / 2, view.y / panel.scale + size.y / 2);
      zoom = item.imageToViewportZoom(view.zoom * panel.scale);
    } else {
      centre = item.imageToViewportCoordinates(view.x * size.x, view.y * size.y);
      zoom = view.zoom;
    }
    viewport.zoomTo(zoom, null, true);
    viewport.panTo(centre, true);
  }

  function follow(index) {
    // Only the viewer the person moves leads: followers set their view at once, and the
    // events that raises must not move the leader back (it may still be animating).
    if (following || index !== leader) return;
    const source = panels[index];
    if (!source || !source.item) return;
    following = true;
    try {
      const view = viewOf(source);
      for (const panel of panels) {
        if (panel !== source && panel.item) show(panel, view);
      }
    } finally {
      following = false;
    }
  }

  function updateScaleBar(panel) {
    const box = panel.element.querySelector(".scalebar");
    if (!panel.item || !panel.scale) return;
    const screenPerImage = panel.item.viewportToImageZoom(panel.viewer.viewport.getZoom(true));
    if (!(screenPerImage > 0)) return;
    const metresPerScreenPixel = panel.scale / screenPerImage;
    const length = roundLength(metresPerScreenPixel * 120);
    box.querySelector(".scalebar-bar").style.width = (length / metresPerScreenPixel).toFixed(2) + "px";
    box.querySelector(".scalebar-label").textContent = formatLength(length);
    box.dataset.metres = String(length);
    box.hidden = false;
  }

  function ready() {
    if (!panels.every(function (p) { return p.item; })) return;
    document.getElementById("compare-mode").textContent =
      physical() ? config.strings.physical : config.strings.relative;
    document.getElementById("compare-grid").dataset.linked = physical() ? "physical" : "relative";
    follow(leader);
  }

  async function start(entry, index) {
    const element = document.getElementById("compare-viewer-" + index);
    const panel = { element: element, viewer: null, item: null, scale: null };
    panels[index] = panel;
    let info;
    try {
      const response = await fetch(entry.infoUrl, { credentials: "same-origin" });
      if (!response.ok) throw new Error(String(response.status));
      info = await response.json();
    } catch (error) {
      element.dataset.state = "failed";
      element.textContent = config.strings.viewerFailed;
      return;
    }
    panel.scale = entry.metresPerPixel || metresPerPixel(info);
    const viewer = OpenSeadragon({
      element: element,
      prefixUrl: config.osdImages,
      drawer: "canvas",
      tileSources: info,
      showNavigator: false,
      maxZoomPixelRatio: 8,
      visibilityRatio: 0.5,
      crossOriginPolicy: false,
      imageSmoothingEnabled: false,
      showRotationControl: false,
      gestureSettingsMouse: { clickToZoom: false },
    });
    panel.viewer = viewer;
    viewer.container.appendChild(element.querySelector(".scalebar"));
    for (const name of ["pointerdown", "wheel", "keydown", "touchstart"]) {
      element.addEventListener(name, function () { leader = index; }, { capture: true, passive: true });
    }
    viewer.addHandler("open", function () {
      panel.item = viewer.world.getItemAt(0);
      panel.item.addHandler("fully-loaded-change", function (event) {
        if (event.fullyLoaded) element.dataset.state = "loaded";
      });
      updateScaleBar(panel);
      ready();
    });
    viewer.addHandler("open-failed", function () { element.dataset.state = "failed"; });
    for (const name of ["viewport-change", "animation"]) {
      viewer.addHandler(name, function () { follow(index); });
    }
    // A resized viewer (a turned phone, a narrower window) keeps the others on its leader.
    viewer.addHandler("resize", function () { follow(leader); });
    for (const name of ["animation", "resize", "update-viewport"]) {
      viewer.addHandler(name, function () { updateScaleBar(panel); });
    }
  }

  if (typeof OpenSeadragon === "undefined") return;
  config.images.forEach(start);
  // For the page's tests and for people's own scripts: the viewers and where each looks.
  window.allmicroCompare = {
    panels: panels,
    physical: physical,
    view: function (index) { return viewOf(panels[index]); },
    lead: function (index) { leader = index; },
  };
})();
