// One feature's page: feature.html#<id> loads data/f/<id / 1000>/<id>.js, a script that calls
// vitsaeFeature({...}); a script tag rather than fetch() so the site works from file://.
// Every text goes in through textContent or SVG text nodes, never as HTML.
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var main = document.getElementById("feature");
  var current = null;

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function svg(tag, attrs, text) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = String(text);
    return node;
  }
  function num(x) { return x === 0 ? "0" : Number(x).toPrecision(3); }
  function pct(x) {
    var p = 100 * x;
    if (p === 0) return "0%";
    return (p >= 1 ? p.toFixed(2) : p >= 0.001 ? String(Number(p.toPrecision(2))) : p.toExponential(1)) + "%";
  }
  function section(title) { var s = el("section"); s.appendChild(el("h2", {}, title)); main.appendChild(s); return s; }
  function notice(parent, text) { parent.appendChild(el("p", { "class": "notice" }, text)); }

  function figure(src, caption, key, size) {
    var fig = el("figure");
    fig.style.width = (size + 10) + "px";
    fig.appendChild(el("img", { src: src, width: size, height: size, alt: caption + " · " + key }));
    fig.appendChild(el("figcaption", { title: caption }, caption));
    fig.appendChild(el("figcaption", { "class": "key", title: key }, key));
    return fig;
  }

  function stat(parent, name, value) {
    var box = el("div", { "class": "stat" });
    box.appendChild(el("b", {}, value));
    box.appendChild(el("span", { "class": "muted" }, name));
    parent.appendChild(box);
  }

  function bars(parent, items, down, signed) {
    var box = el("div", { "class": "bars" });
    var top = Math.max.apply(null, items.map(function (it) { return Math.abs(it[1]); }).concat([1e-12]));
    items.forEach(function (it) {
      var row = el("div", { "class": "row" });
      row.appendChild(el("span", { "class": "name", title: String(it[0]) }, it[0]));
      var track = el("div");
      var fill = el("div", { "class": down ? "fill down" : "fill" });
      fill.style.width = (100 * Math.abs(it[1]) / top).toFixed(1) + "%";
      track.appendChild(fill);
      row.appendChild(track);
      var value = it[1];
      if (signed) value = (value > 0 ? "+" : "") + num(value);
      row.appendChild(el("span", { "class": "num" }, value));
      box.appendChild(row);
    });
    parent.appendChild(box);
  }

  function tick(x) { return x >= 1e4 || x < 1e-3 ? Number(x).toExponential(0) : String(Number(x.toPrecision(2))); }

  function histogram(parent, full) {
    // Show the bins from one below the first non-empty bin to one above the last.
    var first = full.counts.findIndex(function (c) { return c > 0; }), last = first;
    full.counts.forEach(function (c, i) { if (c > 0) last = i; });
    var lo = Math.max(0, first - 1), hi = Math.min(full.counts.length - 1, last + 1);
    var hist = { counts: full.counts.slice(lo, hi + 1), edges: full.edges.slice(lo, hi + 2) };
    var W = 560, H = 170, left = 40, bottom = 28, n = hist.counts.length;
    var chart = svg("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img" });
    chart.appendChild(svg("title", {}, "activation histogram (log-spaced bins, log count)"));
    var peak = Math.max.apply(null, hist.counts.map(function (c) { return Math.log10(1 + c); }).concat([1e-9]));
    var bw = (W - left - 8) / n;
    hist.counts.forEach(function (c, i) {
      var h = (H - bottom - 8) * Math.log10(1 + c) / peak;
      var rect = svg("rect", { x: left + i * bw, y: H - bottom - h, width: Math.max(1, bw - 1), height: h, fill: "#f59e0b" });
      rect.appendChild(svg("title", {}, "[" + num(hist.edges[i]) + ", " + num(hist.edges[i + 1]) + "): " + c));
      chart.appendChild(rect);
    });
    chart.appendChild(svg("line", { x1: left, x2: W - 8, y1: H - bottom, y2: H - bottom, stroke: "#999" }));
    for (var i = 0; i <= n; i += Math.max(1, Math.round(n / 6))) {
      chart.appendChild(svg("text", { x: left + i * bw, y: H - bottom + 14, "text-anchor": "middle" }, tick(hist.edges[i])));
    }
    chart.appendChild(svg("text", { x: W / 2, y: H - 2, "text-anchor": "middle" }, "activation (log scale)"));
    chart.appendChild(svg("text", { x: 4, y: 12 }, "log count"));
    parent.appendChild(chart);
  }

  function render(d) {
    main.textContent = "";
    document.getElementById("title").textContent = "Feature " + d.id + (d.label ? " · " + d.label : "");
    document.title = "Feature " + d.id + " · " + (d.context.title || "vitsae");
    document.getElementById("subtitle").textContent = d.context.description || "";
    var stats = el("div", { "class": "stats" });
    stat(stats, "of tokens it fires on", pct(d.freq));
    stat(stats, "of images it fires in", pct(d.img_freq));
    stat(stats, "mean activation when firing", num(d.mean));
    stat(stats, "max activation", num(d.max));
    stat(stats, "tokens it fires on", d.fire_count);
    main.appendChild(stats);
    if (d.dead) {
      notice(main, "This feature never fired on the " + d.context.n_tokens + " tokens of " + d.context.n_images + " images.");
      return;
    }
    var s = section("Top images (ranked by their strongest patch; heatmap: activation per patch)");
    if (!d.top_images.length) notice(s, d.images_note || "No images were rendered for this feature.");
    var grid = el("div", { "class": "grid" });
    d.top_images.forEach(function (t, r) {
      var caption = "#" + (r + 1) + " · " + num(t.score) + (t.cls !== null ? " · " + t.cls : "");
      grid.appendChild(figure(t.src, caption, t.key, d.context.thumb_size));
    });
    s.appendChild(grid);

    s = section("Top patches");
    grid = el("div", { "class": "grid" });
    d.top_patches.forEach(function (p) {
      grid.appendChild(figure(p.src, num(p.value) + " · (" + p.row + ", " + p.col + ")", p.key, d.context.patch_size));
    });
    if (!d.top_patches.length) notice(s, "No patch tokens fired (the feature fires only on class or register tokens).");
    s.appendChild(grid);

    s = section("Activation histogram (tokens where it fires)");
    histogram(s, d.hist);

    s = section("Examples across its activation range (quantiles of a random sample of " + d.sample_size + " firing tokens)");
    grid = el("div", { "class": "grid" });
    d.quantiles.forEach(function (q) {
      var where = q.patch ? "(" + q.patch[0] + ", " + q.patch[1] + ")" : "token " + q.token;
      grid.appendChild(figure(q.src, "q" + Math.round(100 * q.q) + " · " + num(q.value) + " · " + where, q.key, d.context.thumb_size));
    });
    s.appendChild(grid);

    if (d.classes.length) {
      s = section("Classes of its top " + d.top_images.length + " images");
      bars(s, d.classes, false);
    }
    if (d.logits) {
      s = section("What its decoder direction does to the logits (direct, through the head)");
      var cols = el("div", { "class": "columns" });
      var up = el("div"); up.appendChild(el("h3", {}, "pushes up")); bars(up, d.logits.up, false, true);
      var down = el("div"); down.appendChild(el("h3", {}, "pushes down")); bars(down, d.logits.down, true, true);
      cols.appendChild(up); cols.appendChild(down);
      s.appendChild(cols);
    }
    if (d.ablation) {
      var a = d.ablation;
      s = section("What ablating it does (measured on its top " + a.n_images + " images, the SAE spliced in)");
      var moved = a.moved.map(function (m) { return m[0] + " \u2192 " + m[1] + " (" + m[2] + ")"; }).join(", ");
      s.appendChild(el("p", { "id": "ablation-moved" }, a.n_changed + " of " + a.n_images +
        " top-1 predictions move" + (moved ? ": " + moved : "")));
      var acols = el("div", { "class": "columns" });
      var aup = el("div"); aup.appendChild(el("h3", {}, "mean logit change, up")); bars(aup, a.up, false, true);
      var adown = el("div"); adown.appendChild(el("h3", {}, "mean logit change, down")); bars(adown, a.down, true, true);
      acols.appendChild(aup); acols.appendChild(adown);
      s.appendChild(acols);
    }
  }

  function load() {
    var raw = decodeURIComponent(location.hash.replace(/^#/, ""));
    var id = /^\d+$/.test(raw) ? parseInt(raw, 10) : 0;
    document.body.dataset.ready = "";
    var prev = document.getElementById("prev-feature"), next = document.getElementById("next-feature");
    prev.href = "#" + Math.max(0, id - 1);
    prev.style.visibility = id > 0 ? "visible" : "hidden";
    next.href = "#" + (id + 1);
    if (current) current.remove();
    current = el("script", { src: "data/f/" + String(Math.floor(id / 1000)).padStart(3, "0") + "/" + id + ".js" });
    current.onerror = function () {
      main.textContent = "";
      document.getElementById("title").textContent = "Feature " + id;
      notice(main, "There is no page for feature " + id + ": it is outside the dictionary, or the browser " +
        "was written for a subset of features.");
      document.body.dataset.ready = "1";
    };
    document.head.appendChild(current);
  }

  window.vitsaeFeature = function (d) {
    render(d);
    document.getElementById("next-feature").style.visibility = d.id + 1 < d.context.n_features ? "visible" : "hidden";
    document.body.dataset.ready = "1";
  };
  document.getElementById("goto").addEventListener("submit", function (event) {
    event.preventDefault();
    location.hash = "#" + document.getElementById("goto-id").value;
  });
  window.addEventListener("hashchange", load);
  load();
})();
