// moe-report's layer x expert maps (moetools/report/maps.py): one canvas pixel per (router, expert),
// painted from the inline data, scaled by CSS (pixelated); hover names layer, expert, value and label;
// click opens the expert's card (#LAYER/EXPERT); zoom for wide layers (>= 1,024 experts).
(window.moeDraw = window.moeDraw || []).push(function (DATA) {
  "use strict";
  const box = document.getElementById("maps");
  if (!box || !DATA.maps || !DATA.maps.length || !DATA.num_experts) return;
  const E = DATA.num_experts, layers = DATA.map_layers, L = layers.length;
  const rowOf = {};
  layers.forEach(function (layer, i) { rowOf[layer] = i; });
  const byCell = new Array(L * E);
  DATA.experts.forEach(function (x) { if (rowOf[x.l] !== undefined && x.e < E) byCell[rowOf[x.l] * E + x.e] = x; });
  const keyIndex = {};
  DATA.keys.forEach(function (k, i) { keyIndex[k] = i; });
  const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const DIVERGING = [[33, 102, 172], [247, 247, 247], [178, 24, 43]];
  const tip = document.createElement("div");
  tip.id = "map-tip";
  tip.hidden = true;
  document.body.appendChild(tip);

  function colour(stops, t) {
    t = Math.max(0, Math.min(1, t)) * (stops.length - 1);
    const i = Math.min(stops.length - 2, Math.floor(t)), f = t - i;
    return stops[i].map(function (c, j) { return Math.round(c + f * (stops[i + 1][j] - c)); });
  }
  // one cell's value: run "a" (the page's own), "b" (a comparison's other run) or "d" (b - a)
  function cellValue(spec, x, index, run) {
    if (!x) return NaN;
    if (spec.src === "rs") return x.rs === null || x.rs === undefined ? NaN : x.rs;
    if (run === "d") return cellValue(spec, x, index, "b") - cellValue(spec, x, index, "a");
    const list = spec.src === "h" ? x.h : run === "b" ? (x.b && x.b.v) : x.v;
    let value = list ? list[index] : null;
    if (value === null || value === undefined) return NaN;
    if (spec.log2) value = value > 0 ? Math.log2(value) : NaN;
    return value;
  }
  function values(spec, choice, run) {
    const out = new Float64Array(L * E).fill(NaN);
    const index = spec.src === "v" ? keyIndex[choice[1]] : choice[1];
    for (let c = 0; c < L * E; c++) out[c] = cellValue(spec, byCell[c], index, run);
    return out;
  }
  function fmt(value) {
    if (!isFinite(value)) return "–";
    if (value !== 0 && (Math.abs(value) < 1e-3 || Math.abs(value) >= 1e5)) return value.toExponential(2);
    return String(Math.round(value * 1e4) / 1e4);
  }

  DATA.maps.forEach(function (spec, m) {
    const figure = document.createElement("figure");
    figure.className = "map";
    figure.id = "map-" + m;
    const head = document.createElement("div");
    head.className = "maphead";
    const title = document.createElement("b");
    title.textContent = spec.title;
    head.appendChild(title);
    const select = document.createElement("select");
    spec.keys.forEach(function (choice, i) {
      const option = document.createElement("option");
      option.value = String(i); option.textContent = choice[0];
      select.appendChild(option);
    });
    if (spec.keys.length > 1) head.appendChild(select);
    const runSelect = document.createElement("select");
    runSelect.className = "run";
    if (DATA.compare && spec.src === "v") {
      [["a", DATA.compare.a], ["b", DATA.compare.b], ["d", "Δ " + DATA.compare.b + " − " + DATA.compare.a]].forEach(function (item) {
        const option = document.createElement("option");
        option.value = item[0]; option.textContent = item[1];
        runSelect.appendChild(option);
      });
      head.appendChild(runSelect);
    }
    function run() { return runSelect.value || "a"; }
    const zoom = document.createElement("span");
    zoom.className = "zoom";
    ["−", "+", "fit"].forEach(function (text) {
      const button = document.createElement("button");
      button.type = "button"; button.textContent = text; button.setAttribute("data-zoom", text);
      zoom.appendChild(button);
    });
    const scale = document.createElement("span");
    scale.className = "legend";
    head.appendChild(zoom); head.appendChild(scale);
    const body = document.createElement("div");
    body.className = "mapbody";
    const names = document.createElement("div");
    names.className = "rownames";
    const rowPx = Math.max(10, Math.min(24, Math.floor(200 / L)));
    DATA.rows.forEach(function (name) {
      const n = document.createElement("div");
      n.textContent = name; n.style.height = rowPx + "px"; n.style.lineHeight = rowPx + "px";
      names.appendChild(n);
    });
    const scroller = document.createElement("div");
    scroller.className = "mapscroll";
    const canvas = document.createElement("canvas");
    canvas.width = E; canvas.height = L;
    canvas.style.height = (rowPx * L) + "px";
    scroller.appendChild(canvas);
    body.appendChild(names); body.appendChild(scroller);
    const caption = document.createElement("figcaption");
    caption.textContent = spec.caption + " · hover for the value, click to open the expert's card";
    figure.appendChild(head); figure.appendChild(body); figure.appendChild(caption);
    box.appendChild(figure);

    let grid = null, low = 0, high = 1, pxPerExpert = 0;
    function fit() { return Math.max(0.05, (scroller.clientWidth || 1000) / E); }
    function setZoom(px) {
      const centre = (scroller.scrollLeft + scroller.clientWidth / 2) / Math.max(1, canvas.clientWidth);
      pxPerExpert = Math.min(Math.max(32, fit()), Math.max(fit(), px));
      canvas.style.width = (pxPerExpert * E) + "px";
      scroller.scrollLeft = centre * pxPerExpert * E - scroller.clientWidth / 2;
      figure.setAttribute("data-px", pxPerExpert.toFixed(3));
    }
    function paint() {
      const choice = spec.keys[Number(select.value) || 0];
      grid = values(spec, choice, run());
      let lo = Infinity, hi = -Infinity;
      for (let c = 0; c < grid.length; c++) if (isFinite(grid[c])) { lo = Math.min(lo, grid[c]); hi = Math.max(hi, grid[c]); }
      if (lo === Infinity) { lo = 0; hi = 1; }
      if (spec.div || run() === "d") { const bound = Math.max(Math.abs(lo), Math.abs(hi)) || 1; lo = -bound; hi = bound; }
      if (hi === lo) hi = lo + 1;
      low = lo; high = hi;
      const context = canvas.getContext("2d");
      const image = context.createImageData(E, L);
      const stops = spec.div || run() === "d" ? DIVERGING : VIRIDIS;
      for (let c = 0; c < grid.length; c++) {
        const rgb = isFinite(grid[c]) ? colour(stops, (grid[c] - lo) / (hi - lo)) : [221, 221, 221];
        image.data[4 * c] = rgb[0]; image.data[4 * c + 1] = rgb[1]; image.data[4 * c + 2] = rgb[2]; image.data[4 * c + 3] = 255;
      }
      context.putImageData(image, 0, 0);
      scale.textContent = fmt(lo) + " ";
      const bar = document.createElement("span");
      bar.className = "bar " + (spec.div || run() === "d" ? "div" : "seq");
      scale.appendChild(bar);
      scale.appendChild(document.createTextNode(" " + fmt(hi) + " (grey: no value)"));
    }
    function cell(event) {
      const rect = canvas.getBoundingClientRect();
      const expert = Math.floor((event.clientX - rect.left) / rect.width * E);
      const row = Math.floor((event.clientY - rect.top) / rect.height * L);
      if (expert < 0 || expert >= E || row < 0 || row >= L) return null;
      return { row: row, expert: expert, layer: layers[row] };
    }
    canvas.addEventListener("mousemove", function (event) {
      const at = cell(event);
      if (!at) { tip.hidden = true; return; }
      const x = byCell[at.row * E + at.expert];
      const choice = spec.keys[Number(select.value) || 0];
      const value = grid[at.row * E + at.expert];
      tip.textContent = "";
      [["layer " + DATA.rows[at.row] + " · expert " + at.expert, "where"],
       [(spec.keys.length > 1 ? spec.title + " · " + choice[0] : spec.title) + " = " + fmt(value) +
        (DATA.compare && spec.src === "v" ? " (" + ({ a: DATA.compare.a, b: DATA.compare.b, d: "Δ" })[run()] + "; " +
          DATA.compare.a + " " + fmt(cellValue(spec, x, keyIndex[choice[1]], "a")) + ", " + DATA.compare.b + " " +
          fmt(cellValue(spec, x, keyIndex[choice[1]], "b")) + ")" : ""), "value"],
       [x && x.lab ? x.lab : "no label", "lab"]].forEach(function (item) {
        const line = document.createElement("div");
        line.className = item[1]; line.textContent = item[0];
        tip.appendChild(line);
      });
      tip.setAttribute("data-layer", String(at.layer)); tip.setAttribute("data-expert", String(at.expert));
      tip.setAttribute("data-value", isFinite(value) ? String(value) : "");
      tip.hidden = false;
      tip.style.left = Math.min(window.innerWidth - 260, event.clientX + 14) + "px";
      tip.style.top = (event.clientY + 14) + "px";
    });
    canvas.addEventListener("mouseleave", function () { tip.hidden = true; });
    canvas.addEventListener("click", function (event) {
      const at = cell(event);
      if (!at) return;
      const hash = "#" + at.layer + "/" + at.expert;
      if (location.hash === hash) window.dispatchEvent(new HashChangeEvent("hashchange"));
      else location.hash = hash;
    });
    zoom.addEventListener("click", function (event) {
      const what = event.target.getAttribute("data-zoom");
      if (what === "+") setZoom(pxPerExpert * 2);
      else if (what === "−") setZoom(pxPerExpert / 2);
      else if (what === "fit") setZoom(0);
    });
    scroller.addEventListener("wheel", function (event) {   // ctrl/⌘ + wheel zooms; the plain wheel scrolls the page
      if (!event.ctrlKey && !event.metaKey) return;
      event.preventDefault();
      setZoom(pxPerExpert * (event.deltaY < 0 ? 1.5 : 1 / 1.5));
    }, { passive: false });
    select.addEventListener("change", paint);
    runSelect.addEventListener("change", paint);
    setZoom(0);
    paint();
  });
});
