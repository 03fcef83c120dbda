// Ranking screen (templates/annotation/_rank_task.html). Runs before annotate.js (capture phase on
// window) and stops the keys it handles, so the pairwise keys never act here; annotate.js still
// provides the timer, skip (s), help (?) and the in-flight guard on submit.
// An order nobody touched is not sent on the first Enter or click: the page asks to keep it first
// (the "Keep this order" button, or Enter again), so the order shown is never judged by accident.
(function () {
  "use strict";

  // panel: the task panel this state is for; shown: its order as presented (JSON); touched: the order
  // has differed since; asking: the keep question is on screen; keep: the order shown is confirmed.
  function freshState(p) {
    return { panel: p, selected: null, rating: false, shown: "", touched: false, asking: false, keep: false };
  }
  var state = freshState(null);

  function panel() {
    var p = document.getElementById("task-panel");
    return p && p.dataset.state === "task" && p.dataset.screen === "rank" ? p : null;
  }
  function cards(p) {
    return Array.prototype.slice.call(p.querySelectorAll("#rank-list > .rank-card"));
  }
  function stop(event) {
    event.preventDefault();
    event.stopPropagation();
  }
  function clientError(p, message) {
    var el = p.querySelector("#judgment-form .client-error");
    if (!el) return;
    el.textContent = message;
    el.hidden = !message;
  }

  // Groups of candidate ids, best first: a card with data-tied="1" joins the group above it.
  function groups(p) {
    var out = [];
    cards(p).forEach(function (card, i) {
      var id = Number(card.dataset.id);
      if (i > 0 && card.dataset.tied === "1") out[out.length - 1].push(id);
      else out.push([id]);
    });
    return out;
  }

  function refresh(p) {
    var list = cards(p);
    var rank = 0;
    var parts = [];
    list.forEach(function (card, i) {
      if (i === 0) card.dataset.tied = "0";
      if (card.dataset.tied !== "1") rank += 1;
      card.querySelector(".rank-pos").textContent = (card.dataset.tied === "1" ? "=" : "") + rank;
      parts.push((i === 0 ? "" : card.dataset.tied === "1" ? " = " : " > ") + card.dataset.letter);
      card.classList.toggle("is-selected", card.dataset.id === state.selected);
      card.classList.toggle("is-rating", state.rating && card.dataset.id === state.selected);
    });
    var summary = p.querySelector("#rank-summary");
    if (summary) summary.textContent = parts.join("");
    var order = JSON.stringify(groups(p));
    var field = p.querySelector('#judgment-form input[name="ranking"]');
    if (field) field.value = order;
    if (order !== state.shown) state.touched = true;
    if (state.touched) askKeep(p, false);
  }

  function askKeep(p, show) {
    var box = p.querySelector("#keep-order");
    state.asking = show;
    if (box) box.hidden = !show;
  }

  function keepOrder(p) {
    state.keep = true;
    submit(p);
  }

  function selectedCard(p) {
    return state.selected ? p.querySelector('.rank-card[data-id="' + state.selected + '"]') : null;
  }

  function select(p, card) {
    state.selected = card ? card.dataset.id : null;
    state.rating = false;
    refresh(p);
    if (card) card.scrollIntoView({ block: "nearest" });
  }

  // Shift+arrows: select the card above or below without moving it (reaches cards past the ninth).
  function selectNext(p, delta) {
    var list = cards(p);
    var index = list.indexOf(selectedCard(p));
    var next = list[index < 0 ? 0 : Math.min(Math.max(index + delta, 0), list.length - 1)];
    select(p, next);
  }

  function move(p, delta) {
    var card = selectedCard(p);
    if (!card) return clientError(p, "Select a response first: press its number (1–9).");
    var sibling = delta < 0 ? card.previousElementSibling : card.nextElementSibling;
    if (!sibling) return;
    card.dataset.tied = "0";
    if (delta < 0) sibling.before(card);
    else sibling.after(card);
    refresh(p);
    card.scrollIntoView({ block: "nearest" });
  }

  function toggleTie(p, card) {
    card = card || selectedCard(p);
    if (!card) return clientError(p, "Select a response first: press its number (1–9).");
    if (!card.previousElementSibling) return clientError(p, "The top response has nothing above it to tie with.");
    card.dataset.tied = card.dataset.tied === "1" ? "0" : "1";
    clientError(p, "");
    refresh(p);
  }

  function rate(p, value) {
    var card = selectedCard(p);
    state.rating = false;
    if (card) {
      card.querySelectorAll(".rating input").forEach(function (input) {
        input.checked = input.value === value;
      });
    }
    refresh(p);
  }

  function submit(p) {
    var f = p.querySelector("#judgment-form");
    if (!f || f.dataset.sending === "1") return;
    if (window.htmx) window.htmx.process(f);
    f.requestSubmit();
  }

  function onKey(event) {
    var p = panel();
    var t = event.target;
    if (!p || (document.getElementById("help-overlay") || {}).hidden === false) return;
    if (t.matches && t.matches("textarea, input[type=text], input:not([type]), select")) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && t.name === "rationale") {
        stop(event);
        if (state.asking) keepOrder(p);
        else submit(p);
      }
      return;
    }
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    var key = event.key;
    if (state.rating) {
      stop(event);
      if (/^[0-5]$/.test(key)) rate(p, key === "0" ? "" : key);
      else {
        state.rating = false;
        refresh(p);
      }
      return;
    }
    if (/^[1-9]$/.test(key)) {
      stop(event);
      var card = p.querySelector('.rank-card[data-key="' + key + '"]');
      if (card) select(p, card);
    } else if (key === "0") {
      stop(event);
    } else if ((key === "ArrowUp" || key === "ArrowDown") && event.shiftKey) {
      stop(event);
      selectNext(p, key === "ArrowUp" ? -1 : 1);
    } else if (key === "ArrowUp" || key === "ArrowDown") {
      stop(event);
      move(p, key === "ArrowUp" ? -1 : 1);
    } else if (key === "t" || key === "T") {
      stop(event);
      toggleTie(p);
    } else if (key === "r" || key === "R") {
      stop(event);
      if (!selectedCard(p)) return clientError(p, "Select a response first: press its number (1–9).");
      state.rating = true;
      refresh(p);
    } else if (key === "Enter" && window.PrefStudioAnnotate.enterSubmits(t)) {
      stop(event);
      if (state.asking) keepOrder(p);
      else submit(p);
    } else if (key === "Escape" && state.asking) {
      stop(event);
      askKeep(p, false);
    }
  }
  window.addEventListener("keydown", onKey, true);

  // Every submission (Enter, the button, Ctrl+Enter) posts the order as it is on screen; the first
  // one on an untouched order asks instead, a second one (or "Keep this order") confirms.
  window.addEventListener(
    "submit",
    function (event) {
      var p = panel();
      if (!p || event.target.id !== "judgment-form") return;
      refresh(p);
      var g = groups(p);
      if (g.length < 2) {
        stop(event);
        clientError(p, "All responses are tied: put at least one above another (t toggles a tie).");
      } else if (!state.touched && !state.keep && !state.asking) {
        stop(event);
        askKeep(p, true);
      }
    },
    true
  );

  document.addEventListener("click", function (event) {
    var p = panel();
    var button = event.target.closest && event.target.closest('[data-action="rank-tie"]');
    if (p && event.target.closest && event.target.closest('[data-action="rank-keep"]')) keepOrder(p);
    else if (p && button) toggleTie(p, button.closest(".rank-card"));
    else if (p && event.target.closest && !event.target.closest("input, label, button, a")) {
      var card = event.target.closest(".rank-card");
      if (card) select(p, card);
    }
  });

  // HTML5 drag and drop: drop above or below the card under the pointer.
  var dragging = null;
  document.addEventListener("dragstart", function (event) {
    var card = event.target.closest && event.target.closest(".rank-card");
    if (!card || !panel()) return;
    dragging = card;
    card.classList.add("is-dragging");
    event.dataTransfer.effectAllowed = "move";
    event.dataTransfer.setData("text/plain", card.dataset.letter);
  });
  document.addEventListener("dragover", function (event) {
    var over = event.target.closest && event.target.closest(".rank-card");
    if (!dragging || !over || over === dragging) return;
    event.preventDefault();
    var box = over.getBoundingClientRect();
    if (event.clientY < box.top + box.height / 2) over.before(dragging);
    else over.after(dragging);
  });
  document.addEventListener("dragend", function () {
    var p = panel();
    if (!dragging) return;
    dragging.classList.remove("is-dragging");
    dragging.dataset.tied = "0";
    if (p) select(p, dragging);
    dragging = null;
  });
  document.addEventListener("drop", function (event) {
    if (dragging) event.preventDefault();
  });

  // Once per panel (start-up fires both htmx:load and DOMContentLoaded): its ranking field is still
  // as the server wrote it, set only when the panel is shown again after an error, with the
  // annotator's order.
  function onNewPanel() {
    var p = panel();
    if (p && p === state.panel) return;
    state = freshState(p);
    if (!p) return;
    var field = p.querySelector('#judgment-form input[name="ranking"]');
    state.touched = !!(field && field.value);
    state.shown = JSON.stringify(groups(p));
    refresh(p);
  }
  document.addEventListener("htmx:load", function (event) {
    var t = event.target;
    if (t && (t.id === "task-panel" || t === document.body)) onNewPanel();
  });
  document.addEventListener("DOMContentLoaded", onNewPanel);
})();
