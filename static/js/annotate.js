// Keyboard-first pairwise annotation. No framework: one listener on document reads the state of the
// task panel currently in the page, so it keeps working after htmx swaps the next task in.
(function () {
  "use strict";

  var SIDE_KEYS = { "1": "left", "2": "right", "0": "tie", "9": "both_bad" };
  var STRENGTH_CODES = { Digit1: "1", Digit2: "2", Digit3: "3", Numpad1: "1", Numpad2: "2", Numpad3: "3" };

  // Visible time on the current task: counted only while the tab is visible.
  var timer = { assignment: null, visibleMs: 0, since: null };

  function panel() {
    return document.getElementById("task-panel");
  }

  function activePanel() {
    var p = panel();
    return p && p.dataset.state === "task" ? p : null;
  }

  function resetTimer() {
    var p = activePanel();
    var id = p ? p.dataset.assignmentId : null;
    if (id === timer.assignment) return;
    timer.assignment = id;
    timer.visibleMs = 0;
    timer.since = document.visibilityState === "visible" ? performance.now() : null;
  }

  function elapsedMs() {
    var extra = timer.since === null ? 0 : performance.now() - timer.since;
    return Math.round(timer.visibleMs + extra);
  }

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") {
      timer.since = performance.now();
    } else if (timer.since !== null) {
      timer.visibleMs += performance.now() - timer.since;
      timer.since = null;
    }
  });

  // htmx binds swapped-in content only when it settles (~20 ms later); bind now so a fast key press
  // never falls back to a plain form post and a full page load. htmx.process is idempotent.
  function form(id) {
    var p = activePanel();
    var f = p ? p.querySelector("#" + id) : null;
    if (f && window.htmx) window.htmx.process(f);
    return f;
  }

  function showClientError(message) {
    var f = form("judgment-form");
    var el = f && f.querySelector(".client-error");
    if (!el) return;
    el.textContent = message;
    el.hidden = !message;
  }

  function markChoice() {
    var p = activePanel();
    if (!p) return;
    var checked = p.querySelector('input[name="choice"]:checked');
    p.dataset.choice = checked ? checked.value : "";
    var strength = p.querySelector('fieldset.strength');
    // Strength qualifies "A/B is better"; a tie or "both bad" posts none.
    if (strength) strength.disabled = !!checked && (checked.value === "tie" || checked.value === "both_bad");
  }

  function choose(side) {
    var f = form("judgment-form");
    var input = f && f.querySelector('input[name="choice"][value="' + side + '"]');
    if (!input) return;
    input.checked = true;
    showClientError("");
    markChoice();
  }

  function setStrength(value) {
    var f = form("judgment-form");
    var input = f && f.querySelector('input[name="strength"][value="' + value + '"]');
    if (input) input.checked = true;
  }

  function submitJudgment() {
    var f = form("judgment-form");
    if (!f || f.dataset.sending === "1") return;
    if (!f.querySelector('input[name="choice"]:checked')) {
      showClientError("Choose first: 1 (A), 2 (B), 0 (tie) or 9 (both bad).");
      return;
    }
    f.requestSubmit();
  }

  function openSkip() {
    var f = form("skip-form");
    if (!f) return;
    f.hidden = false;
    f.querySelector('input[name="reason"]').focus();
  }

  function closeSkip() {
    var f = form("skip-form");
    if (!f) return;
    f.hidden = true;
    if (document.activeElement) document.activeElement.blur();
  }

  function toggleHelp(force) {
    var overlay = document.getElementById("help-overlay");
    if (!overlay) return;
    overlay.hidden = typeof force === "boolean" ? !force : !overlay.hidden;
  }

  function helpOpen() {
    var overlay = document.getElementById("help-overlay");
    return overlay && !overlay.hidden;
  }

  // Enter submits wherever focus is, except where it means something else: in a text box (a new line;
  // Ctrl+Enter submits from the rationale), on a link, and on the buttons of the judgment and skip
  // forms. Every other control (the guidelines <summary>, the help, layout, zoom, tie and label
  // buttons) only changes the view: a click leaves focus on it, and Enter must not toggle it again.
  // Space still activates whichever control has focus. Shared with the screens' scripts.
  function enterSubmits(target) {
    return !(target.closest && target.closest("a[href], #judgment-form button, #skip-form button"));
  }
  window.PrefStudioAnnotate = { enterSubmits: enterSubmits };

  function onTypingKey(event, target) {
    if (target.name === "rationale" && event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      submitJudgment();
    } else if (target.name === "reason" && event.key === "Escape") {
      event.preventDefault();
      closeSkip();
    } else if (event.key === "Escape") {
      target.blur();
    }
  }

  function onKey(event) {
    if (event.defaultPrevented || event.altKey || event.ctrlKey || event.metaKey) {
      if (event.target.matches && event.target.matches("textarea, input[type=text]")) onTypingKey(event, event.target);
      return;
    }
    var target = event.target;
    if (target.matches && target.matches("textarea, input[type=text], input:not([type]), select")) {
      onTypingKey(event, target);
      return;
    }
    if (event.key === "?") {
      event.preventDefault();
      toggleHelp();
      return;
    }
    if (helpOpen()) {
      if (event.key === "Escape") toggleHelp(false);
      return;
    }
    if (!activePanel()) return;
    if (event.shiftKey && STRENGTH_CODES[event.code]) {
      event.preventDefault();
      setStrength(STRENGTH_CODES[event.code]);
    } else if (!event.shiftKey && SIDE_KEYS[event.key]) {
      event.preventDefault();
      choose(SIDE_KEYS[event.key]);
    } else if (event.key === "Enter" && enterSubmits(target)) {
      event.preventDefault();
      submitJudgment();
    } else if (event.key === "s" || event.key === "S") {
      event.preventDefault();
      openSkip();
    }
  }

  document.addEventListener("keydown", onKey);

  document.addEventListener("change", function (event) {
    if (event.target.name === "choice") {
      showClientError("");
      markChoice();
    }
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-action]");
    if (!button) return;
    var action = button.dataset.action;
    if (action === "help") toggleHelp();
    else if (action === "skip") openSkip();
    else if (action === "cancel-skip") closeSkip();
  });

  // Before either form is sent: attach the visible time; mark the judgment form as in flight.
  document.addEventListener(
    "submit",
    function (event) {
      var f = event.target;
      if (!f || (f.id !== "judgment-form" && f.id !== "skip-form")) return;
      var field = f.querySelector('input[name="time_spent_ms"]');
      if (field) field.value = String(elapsedMs());
      if (f.id === "judgment-form") {
        if (f.dataset.sending === "1") {
          event.preventDefault();
          event.stopImmediatePropagation();
          return;
        }
        f.dataset.sending = "1";
      }
    },
    true
  );

  document.addEventListener("htmx:afterRequest", function (event) {
    var f = event.detail && event.detail.elt;
    if (f && f.id === "judgment-form") delete f.dataset.sending;
  });

  function onNewPanel() {
    var ready = panel();
    if (ready) ready.dataset.ready = "1";
    resetTimer();
    markChoice();
    var p = activePanel();
    if (p && p.querySelector("#skip-form:not([hidden])")) openSkip();
    else if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
    if (p) window.scrollTo({ top: 0 });
  }

  // htmx:load fires on every piece of content htmx adds (and on <body> at start-up).
  document.addEventListener("htmx:load", function (event) {
    var t = event.target;
    if (t && (t.id === "task-panel" || t === document.body)) onNewPanel();
  });
  document.addEventListener("DOMContentLoaded", onNewPanel);
})();
