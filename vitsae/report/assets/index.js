// The feature index: one compact array of rows (data/index.js), sorted, filtered and paginated here, so
// a dictionary of any size renders only the rows of one page (and loads only its rows' thumbnails). All
// text goes in through textContent.
(function () {
  "use strict";
  var data = window.VITSAE_INDEX;
  var PAGE_ROWS = 100;
  var cols = data.columns; // [{key, name, numeric}]
  var at = {};
  cols.forEach(function (c, i) { at[c.key] = i; });
  var rows = data.rows;
  var state = { key: "freq", desc: true, query: "", hideDead: false, page: 0 };
  var view = rows.slice();
  var byId = function (a, b) { return a[0] - b[0]; };

  function pct(x) {
    var p = 100 * x;
    if (p === 0) return "0";
    return (p >= 1 ? p.toFixed(2) : p >= 0.001 ? String(Number(p.toPrecision(2))) : p.toExponential(1)) + "%";
  }

  function fmt(value, key) {
    if (value === null || value === undefined) return "";
    if (key === "freq" || key === "img_freq") return pct(value);
    if (typeof value === "number") return value === 0 ? "0" : value.toPrecision(3);
    return String(value);
  }

  function matches(row, query) {
    if (!query) return true;
    if (/^\d+$/.test(query)) return String(row[0]).indexOf(query) === 0;
    return ["label", "concept"].some(function (key) {
      var text = at[key] === undefined ? null : row[at[key]];
      return text !== null && text !== undefined && String(text).toLowerCase().indexOf(query) >= 0;
    });
  }

  function compute() {
    var query = state.query.trim().toLowerCase();
    view = rows.filter(function (row) {
      return (!state.hideDead || row[at.freq] > 0) && matches(row, query);
    });
    var i = at[state.key], sign = state.desc ? -1 : 1;
    view.sort(function (a, b) {
      var x = a[i], y = b[i];
      if (x === y) return byId(a, b);
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * sign;
    });
    if (/^\d+$/.test(query)) {  // an exact id match first
      var exact = view.findIndex(function (row) { return String(row[0]) === query; });
      if (exact > 0) view.unshift(view.splice(exact, 1)[0]);
    }
    state.page = Math.min(state.page, Math.max(0, Math.ceil(view.length / PAGE_ROWS) - 1));
  }

  function header() {
    var tr = document.getElementById("header-row");
    tr.textContent = "";
    cols.forEach(function (c) {
      var th = document.createElement("th");
      th.textContent = c.name;
      th.dataset.key = c.key;
      if (c.key === "label") th.className = "label";
      if (c.key === "top" || c.key === "viz") { th.className = "nosort"; tr.appendChild(th); return; }
      if (c.key === state.key) th.classList.add(state.desc ? "sorted-desc" : "sorted-asc");
      th.addEventListener("click", function () {
        if (state.key === c.key) state.desc = !state.desc;
        else { state.key = c.key; state.desc = ["id", "label", "concept"].indexOf(c.key) < 0; }
        state.page = 0;
        refresh();
      });
      tr.appendChild(th);
    });
  }

  function render() {
    var body = document.getElementById("rows");
    var frag = document.createDocumentFragment();
    var start = state.page * PAGE_ROWS;
    var maxFreq = data.max_freq || 1;
    view.slice(start, start + PAGE_ROWS).forEach(function (row) {
      var tr = document.createElement("tr");
      var dead = !(row[at.freq] > 0);
      if (dead) tr.className = "dead";
      cols.forEach(function (c) {
        var td = document.createElement("td");
        if (c.key === "id") {
          var a = document.createElement("a");
          a.href = "feature.html#" + row[0];
          a.textContent = String(row[0]);
          td.appendChild(a);
          if (dead) {
            var badge = document.createElement("span");
            badge.className = "badge";
            badge.textContent = "dead";
            td.appendChild(badge);
          }
        } else if (c.key === "freq") {
          td.textContent = fmt(row[at.freq], "freq");
          var bar = document.createElement("span");
          bar.className = "freqbar";
          bar.style.width = Math.round(60 * Math.sqrt(row[at.freq] / maxFreq)) + "px";
          td.appendChild(bar);
        } else if (c.key === "top") {
          var image = row[at.top];
          if (image !== null && image !== undefined) {
            var link = document.createElement("a");
            link.href = "image.html#" + image;
            var img = document.createElement("img");
            img.className = "thumb";
            img.loading = "lazy";
            img.width = img.height = 36;
            img.alt = "image " + image;
            img.src = "img/" + String(Math.floor(image / 1000)).padStart(3, "0") + "/" + image + ".jpg";
            link.appendChild(img);
            td.appendChild(link);
          }
        } else if (c.key === "viz") {
          var src = row[at.viz];
          if (src) {
            var vlink = document.createElement("a");
            vlink.href = "feature.html#" + row[at.id];
            var vimg = document.createElement("img");
            vimg.className = "thumb";
            vimg.loading = "lazy";
            vimg.width = vimg.height = 36;
            vimg.alt = "visualisation of feature " + row[at.id];
            vimg.src = src;
            vlink.appendChild(vimg);
            td.appendChild(vlink);
          }
        } else {
          td.textContent = fmt(row[at[c.key]], c.key);
          if (c.key === "label" || c.key === "concept") td.className = "label";
        }
        tr.appendChild(td);
      });
      frag.appendChild(tr);
    });
    body.textContent = "";
    body.appendChild(frag);
    var pages = Math.max(1, Math.ceil(view.length / PAGE_ROWS));
    document.getElementById("page").textContent = "page " + (state.page + 1) + " of " + pages;
    document.getElementById("count").textContent = view.length + " of " + rows.length + " features";
    document.getElementById("prev").disabled = document.getElementById("first").disabled = state.page === 0;
    document.getElementById("next").disabled = document.getElementById("last").disabled = state.page >= pages - 1;
  }

  function refresh() { compute(); header(); render(); }

  function go(page) { state.page = page; render(); window.scrollTo(0, 0); }

  var live = rows.filter(function (row) { return row[at.freq] > 0; }).length;
  document.getElementById("summary").textContent =
    rows.length + " features (" + live + " fire, " + (rows.length - live) + " dead) over " +
    data.n_images + " images and " + data.n_tokens + " tokens" + (data.description ? " · " + data.description : "");
  var timer = null;
  document.getElementById("search").addEventListener("input", function (event) {
    clearTimeout(timer);
    timer = setTimeout(function () { state.query = event.target.value; state.page = 0; refresh(); }, 80);
  });
  document.getElementById("hide-dead").addEventListener("change", function (event) {
    state.hideDead = event.target.checked; state.page = 0; refresh();
  });
  document.getElementById("first").addEventListener("click", function () { go(0); });
  document.getElementById("prev").addEventListener("click", function () { go(Math.max(0, state.page - 1)); });
  document.getElementById("next").addEventListener("click", function () { go(state.page + 1); });
  document.getElementById("last").addEventListener("click", function () {
    go(Math.max(0, Math.ceil(view.length / PAGE_ROWS) - 1));
  });
  refresh();
  document.body.dataset.ready = "1";
})();
