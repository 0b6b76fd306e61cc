// The overview's and the alert list's own script: a refused action (someone acted first, a note missing) is shown
// in words above the list instead of being dropped by htmx, which swaps nothing on an error answer.
(function () {
  "use strict";
  function detailOf(xhr) {
    try {
      var body = JSON.parse(xhr.responseText);
      if (body && typeof body.detail === "string") return body.detail;
      if (body && typeof body.message === "string") return body.message;
    } catch (e) { /* not JSON: the status says it */ }
    return xhr.status + " " + xhr.statusText;
  }
  document.addEventListener("htmx:beforeSwap", function (event) {
    var message = document.getElementById("alert-message");
    if (!message) return;
    if (event.detail.xhr.status >= 400) {
      message.textContent = detailOf(event.detail.xhr);
      message.hidden = false;
      event.detail.shouldSwap = false;
    } else if (event.detail.requestConfig && event.detail.requestConfig.verb === "post") {
      message.hidden = true;
    }
  });
  // A reconnected stream may bring again a new alert the list already shows: the old row goes, the new one is put
  // at the top (a row replaced in place is its own target and stays).
  document.addEventListener("htmx:oobBeforeSwap", function (event) {
    var fragment = event.detail.fragment;
    var target = event.detail.target;
    if (!fragment || !fragment.querySelectorAll) return;
    var rows = fragment.querySelectorAll("tr[id]");
    for (var i = 0; i < rows.length; i++) {
      var existing = document.getElementById(rows[i].id);
      if (existing && existing !== target && !existing.contains(target)) existing.remove();
    }
  });
  // A live alert in an empty list: the "no alert matches" line goes.
  document.addEventListener("htmx:oobAfterSwap", function () {
    var empty = document.getElementById("no-alerts");
    if (empty && document.querySelector("#alerts tbody tr")) empty.remove();
  });
})();
