// The campaign page: while its answers are being made, the progress bar follows them
// (a small JSON view, every 2 s); once they are all made the page reloads to show the
// items.
(() => {
  "use strict";
  const bar = document.getElementById("answers-progress");
  const count = document.getElementById("answers-count");
  if (bar.dataset.status !== "generating") return;

  async function poll() {
    try {
      const response = await fetch(bar.dataset.url, { headers: { Accept: "application/json" } });
      if (response.ok) {
        const { status, done, failed, total } = await response.json();
        bar.value = done;
        bar.max = total;
        count.textContent = `${done} of ${total} done, ${failed} failed`;
        if (status !== "generating") {
          location.reload();
          return;
        }
      }
    } catch (error) {
      // The server is restarting or the network dropped: try again on the next tick.
    }
    setTimeout(poll, 2000);
  }
  setTimeout(poll, 2000);
})();
