// The dataset page: while ingests are queued or running, follow their progress and show the
// finished images (or the errors) by reloading once nothing is pending any more.
(function () {
  "use strict";

  const section = document.getElementById("jobs");
  if (!section) return;
  const pending = function (status) { return status === "queued" || status === "running"; };
  if (!Array.from(section.querySelectorAll("tr.job")).some(function (row) {
    return pending(row.dataset.status);
  })) {
    return;
  }

  async function poll() {
    let page;
    try {
      const response = await fetch(section.dataset.jobsUrl, { credentials: "same-origin" });
      if (!response.ok) return;
      page = await response.json();
    } catch (error) {
      return; // the server may be restarting; try again on the next tick
    }
    let stillPending = false;
    for (const job of page.items) {
      const row = section.querySelector('tr.job[data-job-id="' + CSS.escape(job.id) + '"]');
      if (!row) continue;
      if (pending(job.status)) {
        stillPending = true;
        const bar = row.querySelector("progress");
        if (bar) bar.value = job.progress;
      } else if (row.dataset.status !== job.status) {
        // A job finished: the page shows its images or its error after a reload.
        window.location.reload();
        return;
      }
    }
    if (stillPending) setTimeout(poll, 2000);
  }

  setTimeout(poll, 2000);
})();
