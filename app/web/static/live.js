/* Live parts of a page: an element with data-live="<stream url>" opens a server-sent
 * event stream. Each "render" event is {target, mode, html}: the server-rendered (and
 * escaped) HTML replaces or is appended to the element with that id. "signed-out" sends
 * the person to the sign-in page. EventSource reconnects by itself with Last-Event-ID. */
(function () {
  "use strict";
  document.querySelectorAll("[data-live]").forEach(function (element) {
    var source = new EventSource(element.dataset.live);
    source.addEventListener("render", function (event) {
      var update = JSON.parse(event.data);
      var target = document.getElementById(update.target);
      if (target === null) { return; }
      if (update.mode === "append") {
        target.insertAdjacentHTML("beforeend", update.html);
      } else {
        target.innerHTML = update.html;
      }
    });
    source.addEventListener("signed-out", function (event) {
      source.close();
      window.location.assign(JSON.parse(event.data).location);
    });
  });
})();
