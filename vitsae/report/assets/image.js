// The image explorer: image.html#<image> loads data/i/<image / 1000>/<image>.js (top SAE features,
// reconstruction error and a reduced raw embedding per token) and the same for a strip of similar images.
// Hovering a patch lists its top features and error, and lights up, on this image and on the strip,
// the patches whose representation is most similar (cosine of the raw activations, or of the SAE codes),
// as in Fong et al.'s interactive similarity overlays. Clicking a feature overlays its activation map in
// a colour of its own. Every text goes in through textContent.
(function () {
  "use strict";
  var SITE = window.VITSAE_SITE, el = V.el, num = V.num;
  var main = document.getElementById("image");
  var BIG = 336, SMALL = 132;
  var COLOURS = [[255, 64, 64], [64, 160, 255], [64, 220, 96], [255, 200, 0], [210, 90, 255], [0, 230, 220]];
  var state = null;

  function decode(d) {  // typed arrays of the page data, and the token of each grid patch
    var T = V.bytes(d.tokens).length / 4;
    d.tokenArr = new Int32Array(V.bytes(d.tokens).buffer);
    d.codeArr = new Int32Array(V.bytes(d.codes).buffer);
    d.valueArr = new Float32Array(V.bytes(d.values).buffer);
    d.errorArr = new Float32Array(V.bytes(d.error).buffer);
    d.embedArr = new Int8Array(V.bytes(d.embed).buffer);
    d.T = T;
    d.rowOfPatch = {};
    d.prefix = [];
    for (var t = 0; t < T; t++) {
      var patch = V.patchOf(d.tokenArr[t]);
      if (patch) d.rowOfPatch[patch[0] * SITE.layout.grid_hw[1] + patch[1]] = t;
      else d.prefix.push(t);
    }
    return d;
  }

  function codesAt(d, t) {  // [[feature, value], ...] strongest first
    var out = [];
    for (var c = 0; c < d.n_codes; c++) {
      var f = d.codeArr[t * d.n_codes + c];
      if (f >= 0) out.push([f, d.valueArr[t * d.n_codes + c]]);
    }
    return out;
  }

  // Cosine of token t of image a with every token of image b: raw (reduced embeddings) or SAE codes.
  function similarity(a, t, b, mode) {
    var out = new Float32Array(b.T);
    if (mode === "raw") {
      var dims = a.dims;
      for (var u = 0; u < b.T; u++) {
        var dot = 0;
        for (var k = 0; k < dims; k++) dot += a.embedArr[t * dims + k] * b.embedArr[u * dims + k];
        out[u] = dot / (127 * 127);
      }
      return out;
    }
    var mine = {}, norm = 0;
    codesAt(a, t).forEach(function (fv) { mine[fv[0]] = fv[1]; norm += fv[1] * fv[1]; });
    for (var v = 0; v < b.T; v++) {
      var dotc = 0, other = 0;
      codesAt(b, v).forEach(function (fv) { other += fv[1] * fv[1]; if (mine[fv[0]] !== undefined) dotc += mine[fv[0]] * fv[1]; });
      out[v] = norm && other ? dotc / Math.sqrt(norm * other) : 0;
    }
    return out;
  }

  function gridMap(d, perToken) {  // a [gh * gw] map from per-token values
    var g = SITE.layout.grid_hw, map = new Float32Array(g[0] * g[1]);
    for (var p = 0; p < map.length; p++) if (d.rowOfPatch[p] !== undefined) map[p] = perToken[d.rowOfPatch[p]];
    return map;
  }

  function featureMap(d, f) {
    var perToken = new Float32Array(d.T);
    for (var t = 0; t < d.T; t++) codesAt(d, t).forEach(function (fv) { if (fv[0] === f) perToken[t] = fv[1]; });
    return gridMap(d, perToken);
  }

  function draw(view) {
    var d = view.data, g = SITE.layout.grid_hw, size = view.canvas.width, layers = [];
    if (!view.img) return;
    if (state.live && state.mode !== "off" && g) {
      var sim = similarity(state.main, state.hover, d, state.mode);
      var map = gridMap(d, sim);
      layers.push(V.heatLayer(shift(map, state.scale), g[0], g[1], size, 1));
    } else if (g) {
      state.overlays.forEach(function (o) {
        var map = featureMap(d, o.feature), peak = Math.max.apply(null, Array.from(map).concat([1e-12]));
        layers.push(V.heatLayer(map, g[0], g[1], size, peak, o.colour));
      });
    }
    V.drawDimmed(view.canvas, view.img, layers);
    if (view.isMain && state.hover !== null && g) {
      var patch = V.patchOf(d.tokenArr[state.hover]);
      if (patch) {
        var b = V.box(patch[0], patch[1], size), ctx = view.canvas.getContext("2d");
        ctx.strokeStyle = "rgb(0, 230, 255)";
        ctx.lineWidth = 2;
        ctx.strokeRect(b[0] + 1, b[1] + 1, b[2] - 2, b[3] - 2);
      }
    }
    view.canvas.dataset.overlay = state.live && state.mode !== "off" ? state.mode + ":" + state.hover : "features:" + state.overlays.length;
  }

  function shift(map, scale) {  // similarity rescaled so the median patch is dark and the best is bright
    var out = new Float32Array(map.length);
    for (var i = 0; i < map.length; i++) out[i] = Math.max(0, (map[i] - scale[0]) / Math.max(scale[1] - scale[0], 1e-6));
    return out;
  }

  function similarityScale() {  // the median and the largest cosine over every shown image (itself excluded)
    var all = [];
    state.views.forEach(function (view) {
      var sim = similarity(state.main, state.hover, view.data, state.mode);
      sim.forEach(function (x, u) { if (!(view.isMain && u === state.hover)) all.push(x); });
    });
    all.sort(function (a, b) { return a - b; });
    return [all[Math.floor(all.length / 2)] || 0, all[all.length - 1] || 1];
  }

  function redraw() {
    if (state.live && state.mode !== "off") state.scale = similarityScale();
    state.views.forEach(draw);
  }

  function featureRow(f, value, d) {
    var info = d.features[String(f)] || {}, tr = el("tr", { "class": "feature-row", "data-feature": f });
    var overlay = state.overlays.find(function (o) { return o.feature === f; });
    if (overlay) tr.className += " overlaid";
    var td = el("td"), sw = el("span", { "class": "swatch" });
    if (overlay) sw.style.background = "rgb(" + overlay.colour.join(",") + ")";
    td.appendChild(sw);
    td.appendChild(el("a", { href: "feature.html#" + f }, f));
    tr.appendChild(td);
    tr.appendChild(el("td", {}, num(value)));
    tr.appendChild(el("td", { "class": "label" }, info.label || ""));
    tr.appendChild(el("td", { "class": "label muted" }, (info.up || []).map(function (cv) { return cv[0] + " +" + num(cv[1]); }).join(", ")));
    if (d.ablated) {
      var after = d.ablated[String(f)];
      tr.appendChild(el("td", { "class": "label ablated" }, after ? after[0] + " " + V.pct(after[1]) +
        " (" + (after[2] >= 0 ? "+" : "") + (100 * after[2]).toFixed(1) + " pt)" : ""));
    }
    tr.addEventListener("click", function (event) {
      if (event.target.tagName === "A") return;
      toggle(f);
    });
    return tr;
  }

  function table(parent, rows, d, heading) {
    var t = el("table"), head = el("tr");
    var names = [heading, "act.", "label", "logits it pushes up"];
    if (d.ablated) names.push("prediction without it");
    names.forEach(function (h) { head.appendChild(el("th", {}, h)); });
    t.appendChild(head);
    rows.forEach(function (r) { t.appendChild(featureRow(r[0], r[1], d)); });
    parent.appendChild(t);
  }

  function showPatch() {
    var d = state.main, box = document.getElementById("patch-panel");
    box.textContent = "";
    if (state.hover === null) {
      box.appendChild(el("h3", {}, "Hover a patch"));
      box.appendChild(el("p", { "class": "muted" }, "to see the SAE features that fire there and what the SAE misses; click a feature to overlay it."));
      return;
    }
    var token = d.tokenArr[state.hover];
    box.appendChild(el("h3", { id: "patch-name" }, "At " + V.tokenName(token)));
    box.appendChild(el("p", { id: "patch-error" }, "reconstruction error there: " + V.pct(d.errorArr[state.hover]) + " of its squared norm"));
    var codes = codesAt(d, state.hover);
    if (!codes.length) box.appendChild(el("p", { "class": "muted" }, "no feature fires here"));
    else table(box, codes, d, "feature");
  }

  function showMainFeatures() {
    var d = state.main, sums = {}, box = document.getElementById("main-features");
    for (var t = 0; t < d.T; t++) codesAt(d, t).forEach(function (fv) { sums[fv[0]] = (sums[fv[0]] || 0) + fv[1]; });
    var top = Object.keys(sums).map(function (f) { return [parseInt(f, 10), sums[f]]; })
      .sort(function (a, b) { return b[1] - a[1]; }).slice(0, 8);
    box.textContent = "";
    box.appendChild(el("h3", {}, "Main features of this image (summed over its tokens; click to overlay)"));
    if (d.ablated) box.appendChild(el("p", { "class": "muted" }, "Prediction without it: the model's top class " +
      "with the feature ablated on every token (SAE spliced in, error term kept), its probability, and the " +
      "change of the original top class's probability; computed for the image's main features."));
    table(box, top, d, "feature");
  }

  function toggle(f) {
    var at = state.overlays.findIndex(function (o) { return o.feature === f; });
    if (at >= 0) state.overlays.splice(at, 1);
    else {
      var used = state.overlays.map(function (o) { return o.colour; });
      var colour = COLOURS.find(function (c) { return used.indexOf(c) < 0; }) || COLOURS[state.overlays.length % COLOURS.length];
      state.overlays.push({ feature: f, colour: colour });
    }
    showPatch();
    showMainFeatures();
    redraw();
  }

  function patchUnder(event, canvas) {
    var g = SITE.layout.grid_hw, rect = canvas.getBoundingClientRect();
    var col = Math.floor((event.clientX - rect.left) / rect.width * g[1]);
    var row = Math.floor((event.clientY - rect.top) / rect.height * g[0]);
    if (row < 0 || col < 0 || row >= g[0] || col >= g[1]) return null;
    var t = state.main.rowOfPatch[row * g[1] + col];
    return t === undefined ? null : t;
  }

  // The hovered patch stays listed after the mouse leaves the image (so its features can be clicked);
  // the similarity overlay shows only while the mouse is over the image, the feature overlays otherwise.
  function hover(t) {
    var live = t !== null;
    if (t === null) t = state.hover;
    if (t === state.hover && live === state.live) return;
    state.hover = t;
    state.live = live;
    showPatch();
    redraw();
  }

  function view(d, size, isMain) {
    var canvas = V.canvas(size), v = { data: d, canvas: canvas, img: null, isMain: isMain };
    canvas.dataset.image = d.id;
    if (SITE.thumbs) V.image(d.id, function (img) { v.img = img; draw(v); });
    return v;
  }

  function render(d) {
    decode(d);
    main.textContent = "";
    document.getElementById("title").textContent = "Image " + d.id + (d.cls !== null ? " · " + d.cls : "");
    document.title = "Image " + d.id + " · " + (SITE.title || "vitsae");
    document.getElementById("subtitle").textContent = d.key + " · the SAE reconstructs " + V.pct(d.recon) +
      " of its squared activation norm at " + (SITE.description || "this hook");
    state = { main: d, hover: null, live: false, mode: "raw", overlays: [], views: [], scale: [0, 1] };
    var wrap = el("div", { "class": "explorer" }), left = el("div");
    var big = view(d, BIG, true);
    big.canvas.id = "main-canvas";
    state.views.push(big);
    left.appendChild(big.canvas);
    if (!SITE.layout.grid_hw) left.appendChild(el("p", { "class": "notice" }, "This hook has no patch grid: hover a token below."));
    var tokens = el("div", { "class": "tokens" });
    d.prefix.forEach(function (t) {
      var b = el("button", { type: "button", "data-token": t }, V.tokenName(d.tokenArr[t]));
      b.addEventListener("mouseenter", function () { hover(t); });
      b.addEventListener("mouseleave", function () { hover(null); });
      tokens.appendChild(b);
    });
    left.appendChild(tokens);
    var modes = el("div", { "class": "controls", id: "modes" });
    modes.appendChild(el("span", { "class": "muted" }, "similarity overlay:"));
    [["raw", "raw activations"], ["codes", "SAE codes"], ["off", "off"]].forEach(function (m) {
      var label = el("label"), input = el("input", { type: "radio", name: "mode", value: m[0] });
      input.checked = m[0] === state.mode;
      input.addEventListener("change", function () { state.mode = m[0]; redraw(); });
      label.appendChild(input);
      label.appendChild(document.createTextNode(" " + m[1]));
      modes.appendChild(label);
    });
    left.appendChild(modes);
    wrap.appendChild(left);
    var panel = el("div", { "class": "panel", id: "patch-panel" });
    wrap.appendChild(panel);
    main.appendChild(wrap);
    big.canvas.addEventListener("mousemove", function (event) { hover(patchUnder(event, big.canvas)); });
    big.canvas.addEventListener("mouseleave", function () { hover(null); });
    big.canvas.addEventListener("click", function (event) {
      var t = patchUnder(event, big.canvas), codes = t === null ? [] : codesAt(d, t);
      if (codes.length) toggle(codes[0][0]);
    });
    var s = el("section");
    s.appendChild(el("h2", {}, "Similar images (the overlay follows the hovered patch across them)"));
    var strip = el("div", { "class": "strip", id: "strip" });
    s.appendChild(strip);
    main.appendChild(s);
    if (d.top) {
      var preds = el("p", { id: "predictions" });
      preds.appendChild(el("b", {}, "The model predicts: "));
      preds.appendChild(document.createTextNode(d.top.map(function (cp) { return cp[0] + " " + V.pct(cp[1]); }).join(", ")));
      main.appendChild(preds);
    }
    var features = el("div", { "class": "panel", id: "main-features" });
    features.style.maxWidth = "720px";
    main.appendChild(features);
    showPatch();
    showMainFeatures();
    d.similar.forEach(function (other) {
      V.load("i", other, function (o) {
        if (!o || state.main !== d) return;
        decode(o);
        var v = view(o, SMALL, false), fig = el("figure"), link = el("a", { href: "#" + o.id });
        link.appendChild(v.canvas);
        fig.appendChild(link);
        fig.appendChild(el("figcaption", {}, "image " + o.id + (o.cls !== null ? " · " + o.cls : "")));
        strip.appendChild(fig);
        state.views.push(v);
        strip.dataset.loaded = String(state.views.length - 1);
        draw(v);
      });
    });
  }

  function load() {
    var raw = decodeURIComponent(location.hash.replace(/^#/, ""));
    var pages = SITE.image_pages, id = /^\d+$/.test(raw) ? parseInt(raw, 10) : (pages.length ? pages[0] : 0);
    var at = pages.indexOf(id);
    document.body.dataset.ready = "";
    var prev = document.getElementById("prev-image"), next = document.getElementById("next-image");
    prev.style.visibility = at > 0 ? "visible" : "hidden";
    next.style.visibility = at >= 0 && at + 1 < pages.length ? "visible" : "hidden";
    if (at > 0) prev.href = "#" + pages[at - 1];
    if (at >= 0 && at + 1 < pages.length) next.href = "#" + pages[at + 1];
    if (at < 0) {
      state = null;
      main.textContent = "";
      document.getElementById("title").textContent = "Image " + id;
      document.getElementById("subtitle").textContent = "";
      if (SITE.thumbs) {
        var fig = el("figure"), img = el("img", { alt: "image " + id, width: SITE.thumb_size, height: SITE.thumb_size });
        img.src = V.thumbSrc(id);
        fig.appendChild(img);
        main.appendChild(fig);
      }
      main.appendChild(el("p", { "class": "notice" }, "Image " + id + " has no explorer data: run `vitsae stats --images N` " +
        "with N covering it, then `vitsae browse` again."));
      document.body.dataset.ready = "1";
      return;
    }
    V.load("i", id, function (d) {
      if (d === null) {
        main.textContent = "";
        main.appendChild(el("p", { "class": "notice" }, "The data of image " + id + " is missing from this browser."));
      } else {
        render(d);
      }
      document.body.dataset.ready = "1";
    });
  }

  window.addEventListener("hashchange", load);
  load();
})();
