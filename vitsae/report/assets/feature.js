// One feature's page: feature.html#<id> loads data/f/<id / 1000>/<id>.js, a script that calls
// vitsaeFeature({...}); a script tag rather than fetch() so the site works from file://. Pictures are
// drawn on canvas over the shared thumbnails (common.js). Every text goes in through textContent or SVG
// text nodes, never as HTML.
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var SITE = window.VITSAE_SITE;
  var main = document.getElementById("feature");
  var el = V.el, num = V.num, pct = V.pct;
  var shown = null;

  function svg(tag, attrs, text) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = String(text);
    return node;
  }
  function section(title) { var s = el("section"); s.appendChild(el("h2", {}, title)); main.appendChild(s); return s; }
  function notice(parent, text) { parent.appendChild(el("p", { "class": "notice" }, text)); }

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

  function histogram(parent, stored) {
    // The page data holds the bins from the first non-empty one to the last; show one more each side.
    var edges = SITE.hist_edges, nBins = edges.length - 1, first = stored[0], counts = stored[1];
    var lo = Math.max(0, first - 1), hi = Math.min(nBins - 1, first + counts.length);
    var all = [];
    for (var b = lo; b <= hi; b++) all.push(b >= first && b < first + counts.length ? counts[b - first] : 0);
    var hist = { counts: all, edges: edges.slice(lo, hi + 2) };
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

  function mapOf(b64, score, gh, gw) {  // uint8 map (activation / score * 255) in activation units
    var bytes = V.bytes(b64), map = new Float32Array(gh * gw);
    for (var i = 0; i < map.length; i++) map[i] = bytes[i] * score / 255;
    return map;
  }

  function topImages(d) {
    var grid_hw = SITE.layout.grid_hw;
    var s = section(grid_hw ? "Top images (ranked by their strongest patch; heatmap: activation per patch)"
      : "Top images (ranked by their strongest token; this hook has no patch grid, so no heatmap)");
    var masked = d.concept && d.top_images.some(function (t) { return t[5]; });
    if (masked) s.appendChild(el("p", { id: "mask-legend", "class": "muted" }, "Cyan outline: the mask of " + d.concept.concept + ", the feature's dissection concept."));
    if (!d.top_images.length) notice(s, d.images_note || "No images were rendered for this feature.");
    else if (!SITE.thumbs) notice(s, d.images_note || "The browser was written without the image source, so no pictures.");
    var grid = el("div", { "class": "grid", id: "top-images" }), vmax = d.top_images.length ? d.top_images[0][1] : 1;
    d.top_images.forEach(function (t, r) {
      var caption = "#" + (r + 1) + " · " + num(t[1]) + (t[2] !== null ? " · " + t[2] : "");
      grid.appendChild(V.figure(t[0], SITE.thumb_size, caption, t[3], function (canvas, img) {
        var outline = masked && t[5] ? [V.maskOutline(t[5], SITE.mask_size, canvas.width)] : [];
        if (outline.length) canvas.dataset.outline = "1";
        if (!grid_hw || t[4] === null) {
          V.drawMarked(canvas, img, null);
          outline.forEach(function (layer) { canvas.getContext("2d").drawImage(layer, 0, 0); });
          return;
        }
        var layer = V.heatLayer(mapOf(t[4], t[1], grid_hw[0], grid_hw[1]), grid_hw[0], grid_hw[1], canvas.width, vmax);
        V.drawDimmed(canvas, img, [layer].concat(outline));
      }));
    });
    s.appendChild(grid);
  }

  function nearest(d) {
    if (!d.near) return;
    var s = section("Nearest features");
    var cols = el("div", { "class": "columns" });
    [["decoder", "by decoder cosine", "cosine"], ["coact", "by co-activation", "Jaccard"]].forEach(function (kind) {
      var box = el("div", { "class": "near", id: "near-" + kind[0] });
      box.appendChild(el("h3", {}, kind[1]));
      var list = el("ol");
      d.near[kind[0]].forEach(function (n) {
        var li = el("li");
        li.appendChild(el("a", { href: "#" + n[0] }, "feature " + n[0]));
        li.appendChild(el("span", { "class": "muted" }, " · " + kind[2] + " " + num(n[1])));
        list.appendChild(li);
      });
      if (!d.near[kind[0]].length) list.appendChild(el("li", { "class": "muted" }, "none"));
      box.appendChild(list);
      cols.appendChild(box);
    });
    s.appendChild(cols);
  }

  function circuitNode(row, hook, target) {
    // row: [kind, hook, feature, attribution, ablation]
    if (row[0] === "error") return el("span", {}, "error node of " + row[1]);
    if (row[0] === "target") return el("span", {}, "target: " + target);
    if (row[1] === hook) return el("a", { href: "#" + row[2] }, "feature " + row[2]);
    return el("span", {}, row[1] + " feature " + row[2]);
  }

  function circuit(d) {
    if (!d.circuit) return;
    var c = d.circuit;
    var s = section("Circuit (vitsae trace, target " + c.target + ")");
    var cols = el("div", { "class": "columns" });
    [["upstream", "fed by"], ["downstream", "feeds"]].forEach(function (side) {
      var box = el("div", { "class": "near", id: "circuit-" + side[0] });
      box.appendChild(el("h3", {}, side[1]));
      var list = el("ol");
      c[side[0]].forEach(function (row) {
        var li = el("li");
        li.appendChild(circuitNode(row, c.hook, c.target));
        var text = " · attribution " + num(row[3]) + (row[4] === null ? "" : ", ablation " + num(row[4]));
        li.appendChild(el("span", { "class": "muted" }, text));
        list.appendChild(li);
      });
      if (!c[side[0]].length) list.appendChild(el("li", { "class": "muted" }, "none kept"));
      box.appendChild(list);
      cols.appendChild(box);
    });
    s.appendChild(cols);
  }

  function render(d) {
    main.textContent = "";
    var named = d.label || (d.concept ? d.concept.concept : "");
    document.getElementById("title").textContent = "Feature " + d.id + (named ? " · " + named : "");
    document.title = "Feature " + d.id + " · " + (SITE.title || "vitsae");
    document.getElementById("subtitle").textContent = SITE.description || "";
    var stats = el("div", { "class": "stats" });
    stat(stats, "of tokens it fires on", pct(d.freq));
    stat(stats, "of images it fires in", pct(d.img_freq));
    stat(stats, "mean activation when firing", num(d.mean));
    stat(stats, "max activation", num(d.max));
    stat(stats, "tokens it fires on", d.fire_count);
    main.appendChild(stats);
    if (d.concept) {
      var c = d.concept, ci = c.ci.length === 2 ? " [" + num(c.ci[0]) + ", " + num(c.ci[1]) + "]" : "";
      main.appendChild(el("p", { id: "concept" }, "Network dissection: " + c.concept + ", IoU " + num(c.iou) + ci +
        (c.runner_up ? "; runner-up " + c.runner_up + " (" + num(c.runner_up_iou) + ")" : "")));
    }
    if (d.dead) {
      notice(main, "This feature never fired on the " + SITE.n_tokens + " tokens of " + SITE.n_images + " images.");
      nearest(d);
      circuit(d);
      return;
    }
    topImages(d);
    if (d.viz) {
      var vs = section("Feature visualisation (" + (d.viz.kind === "decoder" ? "its decoder direction" : "its activation") +
        " maximised by `vitsae visualize`)");
      var vgrid = el("div", { "class": "grid", id: "featureviz" });
      d.viz.images.forEach(function (src, i) {
        var fig = el("figure");
        fig.style.width = (SITE.thumb_size + 10) + "px";
        fig.appendChild(el("img", { src: src, width: SITE.thumb_size, height: SITE.thumb_size, alt: "visualisation " + i }));
        var reached = d.viz.objective[i] !== undefined ? "reaches " + num(d.viz.objective[i]) : "";
        var ratio = d.viz.ratio[i] !== undefined && d.viz.ratio[i] !== null ? " (" + num(d.viz.ratio[i]) + "x the top image)" : "";
        fig.appendChild(el("figcaption", {}, reached + ratio));
        vgrid.appendChild(fig);
      });
      vs.appendChild(vgrid);
    }

    var s = section("Top patches");
    var grid = el("div", { "class": "grid", id: "top-patches" });
    d.top_patches.forEach(function (p) {
      var patch = V.patchOf(p[3]);
      grid.appendChild(V.figure(p[0], SITE.patch_size, num(p[1]) + " · " + V.tokenName(p[3]), p[2], function (canvas, img) {
        if (patch) V.drawPatch(canvas, img, patch[0], patch[1]); else V.drawMarked(canvas, img, null);
      }));
    });
    if (!d.top_patches.length) notice(s, "No patch tokens fired (the feature fires only on class or register tokens, or the hook has no patch grid).");
    s.appendChild(grid);

    s = section("Activation histogram (tokens where it fires)");
    histogram(s, d.hist);

    s = section("Examples across its activation range (quantiles of a random sample of " + d.sample_size + " firing tokens)");
    grid = el("div", { "class": "grid", id: "quantiles" });
    d.quantiles.forEach(function (q) {
      grid.appendChild(V.figure(q[1], SITE.thumb_size, "q" + Math.round(100 * q[0]) + " · " + num(q[2]) + " · " + V.tokenName(q[4]), q[3],
        function (canvas, img) { V.drawMarked(canvas, img, V.patchOf(q[4])); }));
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
    circuit(d);
    nearest(d);
  }

  function load() {
    var raw = decodeURIComponent(location.hash.replace(/^#/, ""));
    var id = /^\d+$/.test(raw) ? parseInt(raw, 10) : 0;
    document.body.dataset.ready = "";
    shown = id;
    var prev = document.getElementById("prev-feature"), next = document.getElementById("next-feature");
    prev.href = "#" + Math.max(0, id - 1);
    prev.style.visibility = id > 0 ? "visible" : "hidden";
    next.href = "#" + (id + 1);
    next.style.visibility = id + 1 < SITE.n_features ? "visible" : "hidden";
    V.load("f", id, function (d) {
      if (shown !== id) return;
      if (d === null) {
        main.textContent = "";
        document.getElementById("title").textContent = "Feature " + id;
        notice(main, "There is no page for feature " + id + ": it is outside the dictionary, or the browser " +
          "was written for a subset of features.");
      } else {
        render(d);
      }
      document.body.dataset.ready = "1";
    });
  }

  document.getElementById("goto").addEventListener("submit", function (event) {
    event.preventDefault();
    location.hash = "#" + document.getElementById("goto-id").value;
  });
  window.addEventListener("hashchange", load);
  load();
})();
