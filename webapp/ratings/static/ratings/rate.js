// The rater page, keyboard first. The page is a plain form that works without this
// script; here keys drive it, the active time on the task is measured, and a submit
// far faster than reading the answers allows asks for confirmation first.
//
// Active time counts only while the tab is visible, and a spell of more than 60 s
// without a key, the mouse or scrolling is not counted at all.
(() => {
  "use strict";
  const IDLE_MS = 60_000;
  const form = document.getElementById("task");
  const submitButton = document.getElementById("submit");
  const skipButton = document.getElementById("skip-button");
  const skipBox = document.getElementById("skip");
  const rationale = document.getElementById("rationale");
  const tooFast = document.getElementById("too-fast");
  const help = document.getElementById("keys-help");
  const hint = document.getElementById("hint");
  const minSeconds = Number(form.dataset.minSeconds);
  const reasons = [...form.querySelectorAll("input[name=reason]")];
  const toggles = {
    b: document.getElementById("both-bad"),
    "[": document.getElementById("unsafe-left"),
    "]": document.getElementById("unsafe-right"),
  };
  let mode = "choose"; // or "skip", "confirm"
  let confirmed = false;

  // --- active time ---------------------------------------------------------------
  let activeMs = 0;
  let spellStart = performance.now();
  let visible = document.visibilityState === "visible";

  function endSpell() {
    const now = performance.now();
    if (visible && now - spellStart <= IDLE_MS) activeMs += now - spellStart;
    spellStart = now;
  }

  for (const type of ["keydown", "mousemove", "mousedown", "wheel", "scroll", "touchstart"]) {
    window.addEventListener(type, endSpell, { capture: true, passive: true });
  }
  document.addEventListener("visibilitychange", () => {
    endSpell(); // counts the spell up to now if the tab was visible during it
    visible = document.visibilityState === "visible";
  });

  // --- the form ------------------------------------------------------------------
  function say(text) {
    hint.textContent = text;
  }

  function choose(value) {
    const radio = form.querySelector(`input[name=choice][value="${value}"]`);
    radio.checked = true;
    say(radio.parentElement.textContent.trim().replace(/\s+/g, " "));
  }

  function setMode(next) {
    mode = next;
    skipBox.classList.toggle("active", mode === "skip");
    tooFast.hidden = mode !== "confirm";
    if (mode === "skip") say("Skip: a reason by number, then Enter (Esc cancels).");
  }

  form.addEventListener("submit", (event) => {
    if (event.submitter === skipButton) return;
    endSpell();
    const seconds = activeMs / 1000;
    if (seconds < minSeconds && !confirmed) {
      event.preventDefault();
      setMode("confirm");
      return;
    }
    document.getElementById("active-seconds").value = seconds.toFixed(3);
  });

  function submitVerdict() {
    if (!form.querySelector("input[name=choice]:checked")) {
      say("Choose 1–7 first.");
      return;
    }
    form.requestSubmit(submitButton);
  }

  function submitSkip() {
    if (!form.querySelector("input[name=reason]:checked")) {
      say("Pick a reason by its number first.");
      return;
    }
    form.requestSubmit(skipButton);
  }

  // --- keys ----------------------------------------------------------------------
  const handlers = {
    confirm(key) {
      if (key === "Enter") {
        confirmed = true;
        setMode("choose");
        submitVerdict();
      } else if (key === "Escape") {
        setMode("choose");
        say("Back to the task.");
      }
    },
    skip(key) {
      const index = Number(key) - 1;
      if (reasons[index]) reasons[index].checked = true;
      else if (key === "Enter") submitSkip();
      else if (key === "Escape" || key.toLowerCase() === "s") {
        setMode("choose");
        say("");
      }
    },
    choose(key) {
      const lower = key.toLowerCase();
      if (/^[1-7]$/.test(key)) choose(key);
      else if (key === "Enter") submitVerdict();
      else if (toggles[lower]) toggles[lower].checked = !toggles[lower].checked;
      else if (lower === "r") rationale.focus();
      else if (lower === "s") setMode("skip");
      else if (key === "?") help.hidden = !help.hidden;
      else return false;
      return true;
    },
  };

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target === rationale) {
      // Keys typed in the rationale are text; Escape leaves it.
      if (event.key === "Escape") rationale.blur();
      return;
    }
    if (!help.hidden && (event.key === "Escape" || event.key === "?")) {
      help.hidden = true;
      event.preventDefault();
      return;
    }
    const handled = handlers[mode](event.key);
    // Every key is ours in a mode, and Enter never submits the form natively.
    if (handled !== false || mode !== "choose" || event.key === "Enter") {
      event.preventDefault();
    }
  });
})();
