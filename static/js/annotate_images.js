// Image screens: multi-image prompts (_images_task.html) and image pairs (_imgpair_task.html).
// Adds the layout toggle (l), the zoom lightbox (z or a click; arrows switch, Esc closes) and, on the
// image-pair screen, its own hint when Enter comes before a choice. Choosing (1, 2, 0, 9, Shift+1–3),
// submitting, skipping, help and the timer stay with annotate.js.
(function () {
  "use strict";

  var LAYOUTS = ["sequence", "grid", "pip"];
  var box = null;
  var shots = [];
  var at = 0;

  function panel() {
    var p = document.getElementById("task-panel");
    return p && p.dataset.state === "task" && (p.dataset.screen === "images" || p.dataset.screen === "imgpair")
      ? p
      : null;
  }
  function stop(event) {
    event.preventDefault();
    event.stopPropagation();
  }

  function setLayout(p, name) {
    var gallery = p.querySelector(".gallery");
    if (!gallery) return;
    gallery.dataset.layout = name;
    p.querySelectorAll('[data-action="layout"]').forEach(function (button) {
      button.setAttribute("aria-pressed", String(button.dataset.layout === name));
    });
  }

  function cycleLayout(p) {
    var gallery = p.querySelector(".gallery");
    if (!gallery) return;
    setLayout(p, LAYOUTS[(LAYOUTS.indexOf(gallery.dataset.layout) + 1) % LAYOUTS.length]);
  }

  function lightbox() {
    if (box) return box;
    box = document.createElement("div");
    box.id = "lightbox";
    box.className = "lightbox";
    box.hidden = true;
    box.setAttribute("role", "dialog");
    box.setAttribute("aria-modal", "true");
    box.setAttribute("aria-label", "Zoomed image");
    box.innerHTML =
      '<figure><img alt=""><figcaption><span class="lb-caption"></span>' +
      '<span class="muted"><kbd>&larr;</kbd> <kbd>&rarr;</kbd> switch · <kbd>Esc</kbd> close</span></figcaption></figure>' +
      '<button type="button" class="button lb-close" data-action="zoom-close">Close <kbd>Esc</kbd></button>';
    document.body.appendChild(box);
    return box;
  }

  function show(index) {
    if (!shots.length) return;
    at = (index + shots.length) % shots.length;
    var b = lightbox();
    var img = b.querySelector("img");
    img.src = shots[at].dataset.src;
    img.alt = shots[at].dataset.caption || "";
    b.querySelector(".lb-caption").textContent = shots[at].dataset.caption || "";
    b.hidden = false;
  }

  function openZoom(p, button) {
    shots = Array.prototype.slice.call(p.querySelectorAll('[data-action="zoom"]'));
    show(Math.max(0, shots.indexOf(button)));
  }

  function closeZoom() {
    if (box) box.hidden = true;
  }

  function zoomOpen() {
    return box && !box.hidden;
  }

  function onKey(event) {
    var p = panel();
    if (!p || event.altKey || event.ctrlKey || event.metaKey) return;
    if (zoomOpen()) {
      if (event.key === "?") return closeZoom();
      stop(event);
      if (event.key === "Escape" || event.key === "z" || event.key === "Z") closeZoom();
      else if (event.key === "ArrowRight") show(at + 1);
      else if (event.key === "ArrowLeft") show(at - 1);
      return;
    }
    var t = event.target;
    if (t.matches && t.matches("textarea, input[type=text], input:not([type]), select")) return;
    if ((document.getElementById("help-overlay") || {}).hidden === false) return;
    if (event.key === "z" || event.key === "Z") {
      stop(event);
      openZoom(p, null);
    } else if ((event.key === "l" || event.key === "L") && p.dataset.screen === "images") {
      stop(event);
      cycleLayout(p);
    } else if (event.key === "Enter" && p.dataset.screen === "imgpair" && !p.querySelector('input[name="choice"]:checked')) {
      if (!window.PrefStudioAnnotate.enterSubmits(t)) return;
      stop(event);
      var el = p.querySelector("#judgment-form .client-error");
      if (el) {
        el.textContent = "Choose first: 1 (left image), 2 (right image) or 0 (tie).";
        el.hidden = false;
      }
    }
  }
  window.addEventListener("keydown", onKey, true);

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-action]");
    var p = panel();
    if (!button) {
      if (zoomOpen() && event.target === box) closeZoom();
      return;
    }
    if (button.dataset.action === "zoom" && p) openZoom(p, button);
    else if (button.dataset.action === "zoom-close") closeZoom();
    else if (button.dataset.action === "layout" && p) setLayout(p, button.dataset.layout);
  });

  document.addEventListener("htmx:load", function (event) {
    var t = event.target;
    if (t && t.id === "task-panel") closeZoom();
  });
})();
