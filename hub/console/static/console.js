// The console's own script: the CSRF token with every change, the language menu, the live state and the alarm.
// No inline script anywhere (the Content-Security-Policy allows scripts from /static only).
(function () {
  "use strict";
  var CSRF_COOKIE = "__Host-storegate_csrf";
  var SOUND_KEY = "storegate.sound";

  function csrfToken() {
    var prefix = CSRF_COOKIE + "=";
    var parts = document.cookie ? document.cookie.split("; ") : [];
    for (var i = 0; i < parts.length; i++) {
      if (parts[i].indexOf(prefix) === 0) return decodeURIComponent(parts[i].slice(prefix.length));
    }
    return null;
  }

  // htmx requests carry the token as a header; plain forms as a hidden field, added when they are sent.
  document.addEventListener("htmx:configRequest", function (event) {
    var token = csrfToken();
    if (token && event.detail.verb !== "get") event.detail.headers["X-CSRF-Token"] = token;
  });
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-csrf")) return;
    var token = csrfToken();
    if (!token) return;
    var field = form.querySelector("input[name=csrf_token]");
    if (!field) {
      field = document.createElement("input");
      field.type = "hidden";
      field.name = "csrf_token";
      form.appendChild(field);
    }
    field.value = token;
  }, true);

  // A select marked data-autosubmit sends its form when changed (the language menu).
  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target instanceof HTMLSelectElement && target.hasAttribute("data-autosubmit") && target.form) {
      if (typeof target.form.requestSubmit === "function") target.form.requestSubmit();
      else target.form.submit();
    }
  });

  // Live: the footer says whether the server-sent events are flowing.
  document.addEventListener("htmx:sseOpen", function () { document.body.dataset.live = "on"; });
  document.addEventListener("htmx:sseError", function () { document.body.dataset.live = "off"; });
  document.addEventListener("htmx:sseClose", function () { document.body.dataset.live = "off"; });

  // The alarm: a short tone when a live update brings an element marked data-alarm, if the reader turned
  // sound on (a checkbox marked data-sound-toggle; remembered in this browser).
  var audio = null;
  function soundOn() { try { return window.localStorage.getItem(SOUND_KEY) === "on"; } catch (e) { return false; } }
  function beep() {
    if (!soundOn()) return;
    try {
      audio = audio || new (window.AudioContext || window.webkitAudioContext)();
      var oscillator = audio.createOscillator();
      var gain = audio.createGain();
      oscillator.frequency.value = 880;
      gain.gain.value = 0.2;
      oscillator.connect(gain);
      gain.connect(audio.destination);
      oscillator.start();
      oscillator.stop(audio.currentTime + 0.35);
    } catch (e) { /* no audio device: the page still shows the alert */ }
  }
  document.addEventListener("htmx:sseMessage", function () {
    var fresh = document.querySelectorAll("[data-alarm]:not([data-alarmed])");
    if (fresh.length) beep();
    for (var i = 0; i < fresh.length; i++) fresh[i].setAttribute("data-alarmed", "");
  });
  function wireSoundToggles(root) {
    var toggles = root.querySelectorAll("input[data-sound-toggle]");
    for (var i = 0; i < toggles.length; i++) {
      toggles[i].checked = soundOn();
      toggles[i].addEventListener("change", function (event) {
        try { window.localStorage.setItem(SOUND_KEY, event.target.checked ? "on" : "off"); } catch (e) { /* private mode */ }
      });
    }
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.documentElement.classList.add("js");
    // What was on the page when it loaded is not news: only what arrives live sounds the alarm.
    var present = document.querySelectorAll("[data-alarm]");
    for (var i = 0; i < present.length; i++) present[i].setAttribute("data-alarmed", "");
    wireSoundToggles(document);
  });
})();
