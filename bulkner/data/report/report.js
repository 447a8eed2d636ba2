"use strict";
(function () {
  var box = document.getElementById("search");
  if (!box) { return; }
  var sentences = Array.prototype.slice.call(document.querySelectorAll("#sentences .sent"));
  var shown = document.getElementById("shown");
  function filter() {
    var terms = box.value.toLowerCase().split(/\s+/).filter(Boolean);
    var count = 0;
    sentences.forEach(function (sentence) {
      var text = sentence.getAttribute("data-q");
      var hit = terms.every(function (term) { return text.indexOf(term) >= 0; });
      sentence.hidden = !hit;
      if (hit) { count += 1; }
    });
    shown.textContent = String(count);
  }
  box.addEventListener("input", filter);
  filter();
})();
