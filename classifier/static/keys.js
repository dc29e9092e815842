// Keyboard shortcuts for the review page. No message text is touched here.
//   queue:   j / k move between requests, Enter opens the focused one
//   request: j / k next / previous request, a approve, d deny, u back to the queue
(function () {
  "use strict";

  function typing(target) {
    return target && (target.isContentEditable || /^(INPUT|SELECT|TEXTAREA)$/.test(target.tagName));
  }

  function moveInQueue(step) {
    var links = Array.prototype.slice.call(document.querySelectorAll("a.req-link"));
    if (!links.length) return;
    var i = links.indexOf(document.activeElement);
    var next = i < 0 ? (step > 0 ? 0 : links.length - 1) : Math.min(links.length - 1, Math.max(0, i + step));
    links[next].focus();
    links[next].closest("tr").scrollIntoView({ block: "nearest" });
  }

  function follow(selector) {
    var link = document.querySelector(selector);
    if (link) window.location.assign(link.href);
  }

  function decide(value) {
    var form = document.getElementById("decide-form");
    if (!form) return;
    var button = form.querySelector('button[name="decision"][value="' + value + '"]');
    if (form.requestSubmit) form.requestSubmit(button); else button.click();
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat || typing(event.target)) return;
    var queue = document.body.classList.contains("queue-page");
    var actions = queue
      ? { j: function () { moveInQueue(1); }, k: function () { moveInQueue(-1); } }
      : {
          j: function () { follow('a[rel="next"]'); },
          k: function () { follow('a[rel="prev"]'); },
          a: function () { decide("approve"); },
          d: function () { decide("deny"); },
          u: function () { follow(".pager a"); }
        };
    var action = actions[event.key];
    if (action) {
      event.preventDefault();
      action();
    }
  });
})();
