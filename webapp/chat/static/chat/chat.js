// The chat page: one WebSocket per conversation (see webapp/chat/consumers.py).
// The server sends the current branch as sanitized HTML; streamed answer text is only
// ever written with textContent, so nothing a model writes is parsed as HTML here.
(() => {
  "use strict";
  const script = document.getElementById("chat-script");
  const messagesEl = document.getElementById("messages");
  const errorEl = document.getElementById("chat-error");
  const composer = document.getElementById("composer");
  const input = document.getElementById("composer-text");
  const texts = new Map(); // streaming answer id -> its text so far
  let socket = null;
  let lastSent = "";

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}${script.dataset.socketPath}`);
    socket.addEventListener("open", () => document.body.setAttribute("data-connected", "true"));
    socket.addEventListener("message", (event) => handle(JSON.parse(event.data)));
    socket.addEventListener("close", () => {
      document.body.removeAttribute("data-connected");
      setTimeout(connect, 1000);
    });
  }

  function send(payload) {
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      showError("Not connected to the server; reconnecting. Try again in a moment.");
      return false;
    }
    socket.send(JSON.stringify(payload));
    return true;
  }

  function handle(message) {
    if (message.type === "branch") showBranch(message);
    else if (message.type === "token") addToken(message);
    else if (message.type === "queued") showQueued(message);
    else if (message.type === "error") showError(message.message);
  }

  function showBranch(message) {
    messagesEl.innerHTML = message.html; // rendered and sanitized by the server
    texts.clear();
    for (const [id, text] of Object.entries(message.streaming)) {
      texts.set(id, text);
      paint(id);
    }
    addCopyButtons(messagesEl);
    errorEl.hidden = true;
  }

  function addToken({ message_id: messageId, offset, text }) {
    const id = String(messageId);
    const current = texts.get(id);
    // Not on screen, already here, or (never by construction) a gap: skip; the
    // branch sent when the answer ends carries its whole text anyway.
    if (current === undefined || offset + text.length <= current.length) return;
    if (offset > current.length) return;
    texts.set(id, current.slice(0, offset) + text);
    paint(id);
  }

  function paint(id) {
    const el = messagesEl.querySelector(`[data-message-id="${id}"] .answer-text`);
    if (el) el.textContent = texts.get(id);
    setStatus(id, "Writing…");
  }

  // An answer that waits for a free place in the model's batch says so.
  function showQueued({ message_id: messageId, ahead }) {
    setStatus(String(messageId), `Waiting for the model, ${ahead} ahead`);
  }

  function setStatus(id, text) {
    const el = messagesEl.querySelector(`[data-message-id="${id}"] .status-label`);
    if (el && el.dataset.live !== undefined) el.textContent = text;
  }

  function showError(text) {
    errorEl.textContent = text;
    errorEl.hidden = false;
    if (!input.value) input.value = lastSent;
  }

  function addCopyButtons(root) {
    for (const pre of root.querySelectorAll(".markdown pre")) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "copy";
      button.textContent = "Copy";
      button.addEventListener("click", async () => {
        await navigator.clipboard.writeText(pre.querySelector("code").textContent);
        button.textContent = "Copied";
      });
      pre.prepend(button);
    }
  }

  // Compare: which model answers beside this one (the page lists the served models).
  function startCompare(button, messageId) {
    const form = document.getElementById("compare-form").content.firstElementChild.cloneNode(true);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      send({ action: "compare", message_id: messageId, model: form.elements.model.value });
    });
    button.replaceWith(form);
    form.elements.model.focus();
  }

  function startEdit(article) {
    const textEl = article.querySelector(".user-text");
    const form = document.createElement("form");
    form.className = "edit-form";
    const area = document.createElement("textarea");
    area.value = textEl.textContent;
    area.rows = 3;
    const save = document.createElement("button");
    save.type = "submit";
    save.textContent = "Save and answer";
    form.append(area, save);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      send({ action: "edit", message_id: Number(article.dataset.messageId), text: area.value });
    });
    textEl.replaceWith(form);
    area.focus();
  }

  messagesEl.addEventListener("click", (event) => {
    const button = event.target.closest("button");
    if (!button) return;
    const { switch: switchTo, stop, regenerate, edit, compareWith, vote } = button.dataset;
    if (switchTo) send({ action: "switch", message_id: Number(switchTo) });
    else if (stop) send({ action: "stop", message_id: Number(stop) });
    else if (regenerate) send({ action: "regenerate", message_id: Number(regenerate) });
    else if (edit) startEdit(button.closest("article"));
    else if (compareWith) startCompare(button, Number(compareWith));
    else if (vote) send({ action: "vote", message_id: Number(button.dataset.message), choice: Number(vote) });
  });

  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    lastSent = input.value;
    if (send({ action: "send", text: input.value })) input.value = "";
  });

  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });

  addCopyButtons(messagesEl);
  connect();
})();
