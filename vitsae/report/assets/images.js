// The image index: every image with explorer data (data/images.js), sortable by id, class, the model's
// prediction and how much of the image the SAE reconstructs. All text goes in through textContent.
(function () {
  "use strict";
  var el = V.el;
  var data = window.VITSAE_IMAGES || { rows: [] };
  var cols = [["id", "image", 0], ["key", "key", 1], ["cls", "class", 2], ["pred", "prediction", 3],
    ["recon", "reconstructed", 4]];
  if (!data.predictions) cols.splice(3, 1);
  var state = { col: 0, desc: false };

  function render() {
    var i = cols[state.col][2], sign = state.desc ? -1 : 1;
    var rows = data.rows.slice().sort(function (a, b) {
      var x = a[i], y = b[i];
      if (x === y) return a[0] - b[0];
      if (x === null) return 1;
      if (y === null) return -1;
      return (x < y ? -1 : 1) * sign;
    });
    var head = document.getElementById("header-row");
    head.textContent = "";
    head.appendChild(el("th", { "class": "nosort" }, ""));
    cols.forEach(function (c, k) {
      var th = el("th", { "data-key": c[0] }, c[1]);
      if (k === state.col) th.classList.add(state.desc ? "sorted-desc" : "sorted-asc");
      th.addEventListener("click", function () {
        if (state.col === k) state.desc = !state.desc; else { state.col = k; state.desc = c[0] === "recon"; }
        render();
      });
      head.appendChild(th);
    });
    var body = document.getElementById("rows"), frag = document.createDocumentFragment();
    rows.forEach(function (r) {
      var tr = el("tr"), td = el("td"), link = el("a", { href: "image.html#" + r[0] });
      var img = el("img", { "class": "thumb", loading: "lazy", width: 48, height: 48, alt: "image " + r[0] });
      img.src = V.thumbSrc(r[0]);
      link.appendChild(img);
      td.appendChild(link);
      tr.appendChild(td);
      var id = el("td");
      id.appendChild(el("a", { href: "image.html#" + r[0] }, r[0]));
      tr.appendChild(id);
      tr.appendChild(el("td", { "class": "label" }, r[1]));
      tr.appendChild(el("td", { "class": "label" }, r[2] === null ? "" : r[2]));
      if (data.predictions) tr.appendChild(el("td", { "class": "label" }, r[3]));
      tr.appendChild(el("td", {}, V.pct(r[4])));
      frag.appendChild(tr);
    });
    body.textContent = "";
    body.appendChild(frag);
  }

  document.getElementById("summary").textContent = data.rows.length ?
    data.rows.length + " images with explorer data (hover a patch to see what fires there)" :
    "No image explorer data: run `vitsae stats --images N` and `vitsae browse` again.";
  render();
  document.body.dataset.ready = "1";
})();
