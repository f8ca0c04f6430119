// Shared by every page: element helpers, number formats, token names, the page-data loader, and the
// canvas drawing of thumbnails, heatmaps, patch crops and marks. Thumbnails come from file://, which
// taints a canvas: pixels are only ever drawn over them (never read back), and heatmaps are built in
// their own canvas from the page's numbers and composited on top.
(function () {
  "use strict";
  var SITE = window.VITSAE_SITE;
  var V = {};

  V.el = function (tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  };
  V.num = function (x) { return x === 0 ? "0" : Number(x).toPrecision(3); };
  V.pct = function (x) {
    var p = 100 * x;
    if (p === 0) return "0%";
    return (p >= 1 ? p.toFixed(2) : p >= 0.001 ? String(Number(p.toPrecision(2))) : p.toExponential(1)) + "%";
  };
  V.pad = function (i) { return String(Math.floor(i / 1000)).padStart(3, "0"); };
  V.thumbSrc = function (image) { return "img/" + V.pad(image) + "/" + image + ".jpg"; };

  // The name of a token: "CLS", "register 2", or its patch "(row, col)".
  V.tokenName = function (token) {
    var L = SITE.layout;
    if (token < L.n_cls) return L.n_cls > 1 ? "CLS " + (token + 1) : "CLS";
    if (token < L.n_cls + L.n_registers) return "register " + (token - L.n_cls + 1);
    if (!L.grid_hw) return "token " + token;
    var p = token - L.n_cls - L.n_registers;
    return "(" + Math.floor(p / L.grid_hw[1]) + ", " + (p % L.grid_hw[1]) + ")";
  };
  V.patchOf = function (token) {
    var L = SITE.layout, p = token - L.n_cls - L.n_registers;
    if (!L.grid_hw || p < 0) return null;
    return [Math.floor(p / L.grid_hw[1]), p % L.grid_hw[1]];
  };

  V.bytes = function (b64) {
    var s = atob(b64), out = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  };

  // Load one page-data file, a script that calls window.vitsaeFeature(d) or window.vitsaeImage(d);
  // `done(d)`, or `done(null)` when the file is missing.
  var waiting = {};
  V.load = function (kind, id, done) {
    var key = kind + ":" + id, dir = kind === "f" ? "data/f/" : "data/i/";
    (waiting[key] = waiting[key] || []).push(done);
    var script = V.el("script", { src: dir + V.pad(id) + "/" + id + ".js" });
    script.onload = function () { script.remove(); };
    script.onerror = function () {
      script.remove();
      var queue = waiting[key] || [];
      delete waiting[key];
      queue.forEach(function (f) { f(null); });
    };
    document.head.appendChild(script);
  };
  function deliver(kind) {
    return function (d) {
      var key = kind + ":" + d.id, queue = waiting[key] || [];
      delete waiting[key];
      queue.forEach(function (f) { f(d); });
    };
  }
  window.vitsaeFeature = deliver("f");
  window.vitsaeImage = deliver("i");

  var images = {};
  V.image = function (image, ready) {  // the thumbnail as an <img>, decoded once per page
    var img = images[image];
    if (!img) {
      img = images[image] = new Image();
      img.src = V.thumbSrc(image);
    }
    if (img.complete && img.naturalWidth) ready(img);
    else img.addEventListener("load", function () { ready(img); }, { once: true });
    return img;
  };

  var LUT = null;
  function lut() {
    if (!LUT) LUT = V.bytes(SITE.inferno);
    return LUT;
  }

  // Bilinear upsampling of a [gh, gw] map to size x size, pixel centres aligned (as PIL's resize).
  function upsample(map, gh, gw, size) {
    var out = new Float32Array(size * size);
    for (var y = 0; y < size; y++) {
      var sy = Math.min(Math.max((y + 0.5) * gh / size - 0.5, 0), gh - 1);
      var y0 = Math.floor(sy), y1 = Math.min(y0 + 1, gh - 1), fy = sy - y0;
      for (var x = 0; x < size; x++) {
        var sx = Math.min(Math.max((x + 0.5) * gw / size - 0.5, 0), gw - 1);
        var x0 = Math.floor(sx), x1 = Math.min(x0 + 1, gw - 1), fx = sx - x0;
        var top = map[y0 * gw + x0] * (1 - fx) + map[y0 * gw + x1] * fx;
        var bottom = map[y1 * gw + x0] * (1 - fx) + map[y1 * gw + x1] * fx;
        out[y * size + x] = top * (1 - fy) + bottom * fy;
      }
    }
    return out;
  }

  // A canvas layer: the map (values / vmax in [0, 1]) in inferno, opacity 0.75 * sqrt(heat), or in one
  // `colour` [r, g, b] when given (the image explorer's feature overlays).
  V.heatLayer = function (map, gh, gw, size, vmax, colour) {
    var heat = upsample(map, gh, gw, size), layer = document.createElement("canvas");
    layer.width = layer.height = size;
    var ctx = layer.getContext("2d"), pixels = ctx.createImageData(size, size), d = pixels.data, table = lut();
    for (var i = 0; i < heat.length; i++) {
      var h = Math.min(Math.max(heat[i] / (vmax || 1e-12), 0), 1), c = Math.round(h * 255) * 3;
      d[4 * i] = colour ? colour[0] : table[c];
      d[4 * i + 1] = colour ? colour[1] : table[c + 1];
      d[4 * i + 2] = colour ? colour[2] : table[c + 2];
      d[4 * i + 3] = Math.round(255 * 0.75 * Math.sqrt(h));
    }
    ctx.putImageData(pixels, 0, 0);
    return layer;
  };

  // A canvas layer outlining a bit-packed n x n mask (base64, row-major, most significant bit first): the
  // mask's cells with a neighbour outside it, in cyan, for the dissection concept on a top image.
  V.maskOutline = function (b64, n, size) {
    var bytes = V.bytes(b64), layer = document.createElement("canvas");
    function on(r, c) { return r >= 0 && c >= 0 && r < n && c < n && (bytes[(r * n + c) >> 3] >> (7 - ((r * n + c) & 7))) & 1; }
    layer.width = layer.height = size;
    var ctx = layer.getContext("2d"), cell = size / n;
    ctx.fillStyle = "rgba(0, 230, 255, 0.9)";
    for (var r = 0; r < n; r++) {
      for (var c = 0; c < n; c++) {
        if (on(r, c) && !(on(r - 1, c) && on(r + 1, c) && on(r, c - 1) && on(r, c + 1))) {
          ctx.fillRect(Math.floor(c * cell), Math.floor(r * cell), Math.ceil(cell), Math.ceil(cell));
        }
      }
    }
    return layer;
  };

  V.canvas = function (size) {
    var canvas = V.el("canvas", { width: size, height: size });
    canvas.style.width = canvas.style.height = size + "px";
    return canvas;
  };

  // The thumbnail darkened to 55% (as a heatmap's background) with `layers` composited over it.
  V.drawDimmed = function (canvas, img, layers) {
    var ctx = canvas.getContext("2d"), size = canvas.width;
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(img, 0, 0, size, size);
    ctx.fillStyle = "rgba(0, 0, 0, 0.45)";
    ctx.fillRect(0, 0, size, size);
    (layers || []).forEach(function (layer) { ctx.drawImage(layer, 0, 0, size, size); });
  };

  function box(row, col, size) {  // the pixel box of patch (row, col) in a size x size picture
    var g = SITE.layout.grid_hw;
    var l = Math.round(col * size / g[1]), t = Math.round(row * size / g[0]);
    return [l, t, Math.round((col + 1) * size / g[1]) - l, Math.round((row + 1) * size / g[0]) - t];
  }
  V.box = box;

  // Patch (row, col) with one patch of surroundings on each side, upscaled to the canvas and outlined.
  V.drawPatch = function (canvas, img, row, col) {
    var ctx = canvas.getContext("2d"), size = canvas.width, n = img.naturalWidth;
    var b = box(row, col, n), winW = Math.min(n, b[2] * 3), winH = Math.min(n, b[3] * 3);
    var x0 = Math.min(Math.max(0, Math.round(b[0] + b[2] / 2 - winW / 2)), n - winW);
    var y0 = Math.min(Math.max(0, Math.round(b[1] + b[3] / 2 - winH / 2)), n - winH);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(img, x0, y0, winW, winH, 0, 0, size, size);
    var sx = size / winW, sy = size / winH, line = Math.max(1, Math.round(size / 48));
    ctx.strokeStyle = "rgb(0, 230, 255)";
    ctx.lineWidth = line;
    ctx.strokeRect((b[0] - x0) * sx + line / 2, (b[1] - y0) * sy + line / 2, b[2] * sx - line, b[3] * sy - line);
  };

  // The thumbnail with one patch outlined (none for a CLS or register token).
  V.drawMarked = function (canvas, img, patch) {
    var ctx = canvas.getContext("2d"), size = canvas.width;
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(img, 0, 0, size, size);
    if (!patch) return;
    var b = box(patch[0], patch[1], size), line = Math.max(1, Math.round(size / 64));
    ctx.strokeStyle = "rgb(0, 230, 255)";
    ctx.lineWidth = line;
    ctx.strokeRect(b[0] + line / 2, b[1] + line / 2, b[2] - line, b[3] - line);
  };

  // A figure holding a canvas (or a note when the browser has no thumbnails), linking to the image page.
  V.figure = function (image, size, caption, key, draw) {
    var fig = V.el("figure");
    fig.style.width = (size + 10) + "px";
    var link = V.el("a", { href: "image.html#" + image, title: key });
    if (SITE.thumbs) {
      var canvas = V.canvas(size);
      canvas.setAttribute("aria-label", caption + " · " + key);
      canvas.dataset.image = image;
      link.appendChild(canvas);
      V.image(image, function (img) { draw(canvas, img); canvas.dataset.drawn = "1"; });
    }
    fig.appendChild(link);
    fig.appendChild(V.el("figcaption", { title: caption }, caption));
    fig.appendChild(V.el("figcaption", { "class": "key", title: key }, key));
    return fig;
  };

  window.V = V;
})();
