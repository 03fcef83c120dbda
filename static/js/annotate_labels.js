// Step-wise labelling (_steps_task.html) and sentence factuality (_facts_task.html): a list of rows,
// one selected, each given a label by key. Runs before annotate.js (capture phase on window) and stops
// the keys it handles; annotate.js still provides the timer, skip (s), help (?) and the in-flight guard.
(function () {
  "use strict";

  var SCREENS = {
    steps: {
      field: "step_labels",
      keys: { c: "correct", n: "neutral", w: "wrong" },
      stopAt: "wrong",
      what: "Step",
      missing: "label it c (correct), n (neutral) or w (wrong)",
    },
    facts: {
      field: "sentence_labels",
      keys: { f: "factual", h: "hallucinated", x: "not_claim" },
      correctable: "hallucinated",
      what: "Sentence",
      missing: "mark it f (factual), h (hallucinated) or x (not a claim)",
    },
  };

  function panel() {
    var p = document.getElementById("task-panel");
    return p && p.dataset.state === "task" && SCREENS[p.dataset.screen] ? p : null;
  }
  function config(p) {
    return SCREENS[p.dataset.screen];
  }
  function rows(p) {
    return Array.prototype.slice.call(p.querySelectorAll(".label-list > .label-row"));
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

  // Step-wise: rows after the first wrong step are out of play (greyed, unlabelled).
  function open(p) {
    var cfg = config(p);
    var list = rows(p);
    if (!cfg.stopAt) return list;
    var cut = list.findIndex(function (row) {
      return row.dataset.label === cfg.stopAt;
    });
    return cut < 0 ? list : list.slice(0, cut + 1);
  }

  function refresh(p) {
    var cfg = config(p);
    var live = open(p);
    var labels = [];
    rows(p).forEach(function (row) {
      var inPlay = live.indexOf(row) >= 0;
      row.classList.toggle("is-out", !inPlay);
      if (!inPlay) row.dataset.label = "";
      row.querySelectorAll(".tag").forEach(function (tag) {
        tag.setAttribute("aria-pressed", String(tag.dataset.set === row.dataset.label));
        tag.disabled = !inPlay;
      });
      if (inPlay) labels.push(row.dataset.label);
    });
    var field = p.querySelector('#judgment-form input[name="' + cfg.field + '"]');
    if (cfg.field === "step_labels") {
      var wrong = labels.indexOf("wrong");
      var box = p.querySelector('textarea[name="corrected_step"]');
      var n = p.querySelector("#wrong-step-n");
      if (box) box.disabled = wrong < 0;
      if (n) n.textContent = wrong < 0 ? "" : String(wrong + 1);
      if (field) field.value = JSON.stringify(labels);
    } else if (field) {
      field.value = JSON.stringify(
        rows(p).map(function (row) {
          var box = row.querySelector("[data-correction]");
          var entry = { label: row.dataset.label };
          if (row.dataset.label === cfg.correctable && box && box.value.trim()) entry.correction = box.value;
          return entry;
        })
      );
    }
    var summary = p.querySelector("#label-summary");
    if (summary) {
      var done = rows(p).filter(function (row) {
        return row.dataset.label;
      }).length;
      summary.textContent = done + " of " + rows(p).length;
    }
  }

  function selected(p) {
    return p.querySelector(".label-row.is-selected");
  }

  function select(p, row) {
    rows(p).forEach(function (r) {
      r.classList.toggle("is-selected", r === row);
    });
    if (row) row.scrollIntoView({ block: "nearest" });
  }

  function step(p, delta) {
    var live = open(p);
    var index = live.indexOf(selected(p));
    var next = live[Math.min(Math.max(index + delta, 0), live.length - 1)];
    select(p, next || live[0]);
  }

  function label(p, value) {
    var row = selected(p) || open(p)[0];
    if (!row) return;
    row.dataset.label = value;
    clientError(p, "");
    refresh(p);
    var cfg = config(p);
    if (value !== cfg.stopAt) step(p, 1);
    else select(p, row);
  }

  function edit(p) {
    var cfg = config(p);
    if (cfg.stopAt) {
      var box = p.querySelector('textarea[name="corrected_step"]');
      if (!box || box.disabled) return clientError(p, "Mark the first wrong step (w) before writing its correction.");
      box.focus();
      return;
    }
    var row = selected(p) || open(p)[0];
    if (!row) return;
    if (row.dataset.label !== cfg.correctable) {
      row.dataset.label = cfg.correctable;
      refresh(p);
    }
    select(p, row);
    var input = row.querySelector("[data-correction]");
    if (input) input.focus();
  }

  function problem(p) {
    var cfg = config(p);
    var live = open(p);
    var missing = live.findIndex(function (row) {
      return !row.dataset.label;
    });
    if (missing < 0) return null;
    select(p, live[missing]);
    return cfg.what + " " + (missing + 1) + " has no label yet: " + cfg.missing + ".";
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
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && t.name !== "reason") {
        stop(event);
        submit(p);
      }
      return;
    }
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    var key = event.key;
    var value = config(p).keys[key.toLowerCase()];
    if (key === "ArrowDown" || key === "ArrowUp" || key === "j" || key === "k") {
      stop(event);
      step(p, key === "ArrowDown" || key === "j" ? 1 : -1);
    } else if (value) {
      stop(event);
      label(p, value);
    } else if (key === "e" || key === "E") {
      stop(event);
      edit(p);
    } else if (key === "Enter" && window.PrefStudioAnnotate.enterSubmits(t)) {
      stop(event);
      submit(p);
    } else if (/^[0-9]$/.test(key)) {
      stop(event); // the pairwise choice keys mean nothing here
    }
  }
  window.addEventListener("keydown", onKey, true);

  window.addEventListener(
    "submit",
    function (event) {
      var p = panel();
      if (!p || event.target.id !== "judgment-form") return;
      refresh(p);
      var message = problem(p);
      if (message) {
        stop(event);
        clientError(p, message);
      }
    },
    true
  );

  document.addEventListener("click", function (event) {
    var p = panel();
    var tag = p && event.target.closest && event.target.closest(".label-row .tag");
    if (tag) {
      select(p, tag.closest(".label-row"));
      label(p, tag.dataset.set);
      return;
    }
    var row = p && event.target.closest && event.target.closest(".label-row");
    if (row && !row.classList.contains("is-out") && !event.target.closest("textarea")) select(p, row);
  });
  document.addEventListener("input", function (event) {
    var p = panel();
    if (p && event.target.matches && event.target.matches("[data-correction]")) refresh(p);
  });

  function onNewPanel() {
    var p = panel();
    if (!p) return;
    refresh(p);
    var live = open(p);
    var first = live.find(function (row) {
      return !row.dataset.label;
    });
    select(p, first || live[0]);
  }
  document.addEventListener("htmx:load", function (event) {
    var t = event.target;
    if (t && (t.id === "task-panel" || t === document.body)) onNewPanel();
  });
  document.addEventListener("DOMContentLoaded", onNewPanel);
})();
