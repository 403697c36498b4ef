// A dashboard follows the ratings: its WebSocket says when the numbers changed (at
// most once every 2 s), and the numbers are fetched again and swapped in, without a
// reload. The socket reconnects, waiting longer each time, if it drops.
(() => {
  "use strict";
  const numbers = document.getElementById("numbers");
  const status = document.getElementById("live-status");
  if (!numbers) return;
  let wait = 1000;

  async function refresh() {
    const response = await fetch(numbers.dataset.url, { credentials: "same-origin" });
    if (response.ok) numbers.innerHTML = await response.text();
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}${numbers.dataset.socket}`);
    socket.addEventListener("open", () => {
      wait = 1000;
      status.classList.add("on");
      status.textContent = "live";
    });
    socket.addEventListener("message", (event) => {
      if (JSON.parse(event.data).type === "changed") refresh();
    });
    socket.addEventListener("close", () => {
      status.classList.remove("on");
      status.textContent = "reconnecting…";
      setTimeout(connect, wait);
      wait = Math.min(wait * 2, 30000);
    });
  }
  connect();
})();
