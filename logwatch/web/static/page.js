// logwatchd status page: the only script (no inline script: the CSP forbids it).
// Changes ask first; everything else works without JavaScript.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("button.act").forEach(function (button) {
    button.addEventListener("click", function (event) {
      var target = button.form.querySelector("input[name=target]").value;
      if (!window.confirm(button.textContent + " " + target + "?")) {
        event.preventDefault();
      }
    });
  });
  document.documentElement.setAttribute("data-script", "ran");
});
