// Calibration shared by the image page, its measurement panel, the share page's viewer and the
// compare page: the metres per pixel an info.json's physical-dimensions service gives, lengths
// in the unit that reads best (Å below a nanometre, as TEM people read pixel sizes and lattice
// spacings), and the round 1, 2 or 5 × 10^n lengths scale bars show.
(function () {
  "use strict";

  const TO_METRES = { m: 1, mm: 1e-3, um: 1e-6, "µm": 1e-6, nm: 1e-9, in: 0.0254, cm: 1e-2 };
  const UNITS = [["m", 1], ["mm", 1e-3], ["µm", 1e-6], ["nm", 1e-9], ["Å", 1e-10], ["pm", 1e-12]];

  function metresPerPixel(info) {
    for (const service of [].concat((info && info.service) || [])) {
      if (String(service.profile || "").indexOf("physdim") >= 0 && service.physicalScale > 0) {
        const factor = TO_METRES[service.physicalUnits];
        if (factor) return service.physicalScale * factor;
      }
    }
    return null;
  }

  // The unit that gives a number of at least 1: [name, metres].
  function unitFor(metres) {
    for (const unit of UNITS) if (Math.abs(metres) >= unit[1] * 0.9999) return unit;
    return UNITS[UNITS.length - 1];
  }

  // Six significant digits at most: far below any calibration's precision, short to read.
  function formatLength(metres, numberFormat) {
    const unit = unitFor(metres);
    return numberFormat.format(Number((metres / unit[1]).toPrecision(6))) + " " + unit[0];
  }

  // The largest 1, 2 or 5 × 10^n not above `limit`: scale bars read best at round lengths.
  function roundLength(limit) {
    const power = Math.pow(10, Math.floor(Math.log10(limit)));
    for (const step of [5, 2, 1]) {
      if (step * power <= limit) return step * power;
    }
    return power;
  }

  window.AllMicroCalibration = {
    metresPerPixel: metresPerPixel,
    unitFor: unitFor,
    formatLength: formatLength,
    roundLength: roundLength,
  };
})();
