// Renders the formulas that pymdownx.arithmatex (generic mode) leaves as
// \( ... \) and \[ ... \] inside elements of class "arithmatex".
//
// Nothing here is needed to build the site. In the browser, MathJax 3 is
// loaded from a vendored copy if one was placed at
// docs/javascripts/vendor/mathjax/tex-chtml.js, else from a CDN when online;
// if neither loads, the TeX source stays on the page, readable as is.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};

(function () {
  var here = document.currentScript ? document.currentScript.src : "";
  var base = here.substring(0, here.lastIndexOf("/") + 1);
  var sources = [
    base + "vendor/mathjax/tex-chtml.js",
    "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js",
  ];
  function load(index) {
    if (index >= sources.length) return;
    var script = document.createElement("script");
    script.src = sources[index];
    script.async = true;
    script.onerror = function () {
      script.remove();
      load(index + 1);
    };
    document.head.appendChild(script);
  }
  load(0);

  // Material's instant navigation swaps pages without a reload.
  if (typeof document$ !== "undefined") {
    document$.subscribe(function () {
      if (window.MathJax && MathJax.typesetPromise) {
        MathJax.startup.output.clearCache();
        MathJax.typesetClear();
        MathJax.texReset();
        MathJax.typesetPromise();
      }
    });
  }
})();
