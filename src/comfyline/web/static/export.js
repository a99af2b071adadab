// Export: while an export runs, follow its messages; reload the page when it ends.
"use strict";

const job = document.getElementById("export-job");
if (job && job.dataset.state === "running") {
  const lines = document.getElementById("job-lines");
  const state = document.getElementById("job-state");
  const follow = async () => {
    const reply = await fetch(job.dataset.status);
    const status = await reply.json();
    lines.textContent = status.lines.join("\n");
    lines.hidden = !status.lines.length;
    state.textContent = status.state;
    if (status.state === "running") setTimeout(follow, 500);
    else location.reload();
  };
  setTimeout(follow, 300);
}
