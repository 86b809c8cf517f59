// Result delivery pages: copy a new share link's address, print a delivery cover.
(function () {
  "use strict";

  for (const button of document.querySelectorAll("button.copy[data-copy]")) {
    button.addEventListener("click", async function () {
      const input = document.getElementById(button.dataset.copy);
      if (!input) return;
      input.select();
      try {
        await navigator.clipboard.writeText(input.value);
      } catch (error) {
        document.execCommand("copy");
      }
      button.textContent = button.dataset.copied || button.textContent;
    });
  }

  const print = document.getElementById("print-cover");
  if (print) print.addEventListener("click", function () { window.print(); });
})();
