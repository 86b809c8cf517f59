// The IIIF Authorization Flow pages (api/routers/iiif_auth.py): the token page posts its
// message to the viewer that framed it, and only to that viewer's origin; the sign-in and
// sign-out windows close themselves when done, or on their button.
(function () {
  "use strict";
  const token = document.getElementById("iiif-token-message");
  if (token) {
    const data = JSON.parse(token.textContent);
    window.parent.postMessage(data.message, data.origin);
  }
  for (const button of document.querySelectorAll("button[data-close]")) {
    button.addEventListener("click", () => window.close());
  }
  if (document.querySelector("[data-close-window]") && window.opener) {
    window.close();
  }
})();
