// moe-report's document view (moetools/report/documents.py): one traced document's tokens, coloured by
// the expert each token went to first in the chosen layer, or shaded by one expert's gate; every token
// names its experts and gates (title, data-experts); clicking a token opens its first expert's card.
(window.moeDraw = window.moeDraw || []).push(function (DATA) {
  "use strict";
  const box = document.getElementById("docs");
  if (!box || !DATA.docs || !DATA.docs.length) return;
  const K = DATA.top_k || 1;
  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const name in attrs || {}) node.setAttribute(name, attrs[name]);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function hue(expert) { return (expert * 137.508) % 360; }   // golden angle: neighbouring ids far apart
  const docSelect = el("select", { id: "doc" }), layerSelect = el("select", { id: "doc-layer" });
  const modeSelect = el("select", { id: "doc-mode" }), expertInput = el("input", { id: "doc-expert", type: "number",
    min: "0", max: String((DATA.num_experts || 1) - 1), value: "0", style: "width:70px" });
  DATA.docs.forEach(function (doc, i) {
    docSelect.appendChild(el("option", { value: String(i) }, doc.id + (doc.dom ? " (" + doc.dom + ")" : "") +
      " · " + doc.p.length + " tokens"));
  });
  DATA.doc_rows.forEach(function (name, i) { layerSelect.appendChild(el("option", { value: String(i) }, "layer " + name)); });
  modeSelect.appendChild(el("option", { value: "expert" }, "colour by first expert"));
  modeSelect.appendChild(el("option", { value: "gate" }, "shade by the gate of expert"));
  const controls = el("div", { class: "doccontrols" });
  [docSelect, layerSelect, modeSelect, expertInput].forEach(function (node) { controls.appendChild(node); });
  const legend = el("div", { class: "meta doclegend" });
  const text = el("div", { class: "ctx doctext", id: "doc-text" });
  box.appendChild(controls); box.appendChild(legend); box.appendChild(text);

  function draw() {
    const doc = DATA.docs[Number(docSelect.value) || 0], row = Number(layerSelect.value) || 0;
    const layer = DATA.doc_layers[row], byGate = modeSelect.value === "gate", chosen = Number(expertInput.value);
    expertInput.hidden = !byGate;
    const ids = doc.x[row], gates = doc.g[row];
    text.textContent = "";
    const counts = {};
    doc.p.forEach(function (piece, t) {
      const experts = ids.slice(t * K, t * K + K), weights = gates.slice(t * K, t * K + K);
      const span = el("span", { class: "tok dtok", "data-experts": experts.join(","), "data-layer": String(layer),
        title: "layer " + DATA.doc_rows[row] + " · token " + t + " · experts " + experts.map(function (e, k) {
          return e + " (gate " + weights[k] + ")"; }).join(", ") }, piece.replace(/\n/g, "⏎\n").replace(/\t/g, "⇥"));
      if (byGate) {
        const k = experts.indexOf(chosen), gate = k < 0 ? 0 : weights[k];
        if (gate > 0) span.style.backgroundColor = "rgba(230,110,0," + (0.15 + 0.85 * Math.min(1, gate)).toFixed(3) + ")";
      } else {
        span.style.backgroundColor = "hsla(" + hue(experts[0]).toFixed(1) + ",70%,60%,0.45)";
        counts[experts[0]] = (counts[experts[0]] || 0) + 1;
      }
      span.addEventListener("click", function () {
        location.hash = layer + "/" + (byGate && experts.indexOf(chosen) >= 0 ? chosen : experts[0]);
      });
      text.appendChild(span);
    });
    legend.textContent = "";
    if (byGate) {
      legend.appendChild(document.createTextNode("shaded by the gate of expert " + chosen + " in layer " +
        DATA.doc_rows[row] + " (unshaded: not routed to it); "));
      legend.appendChild(el("a", { class: "eid", href: "#" + layer + "/" + chosen }, "its card"));
      return;
    }
    legend.appendChild(document.createTextNode("each token coloured by its first expert in layer " + DATA.doc_rows[row] +
      " (hover: its " + K + " experts and gates; click: the card); most frequent: "));
    Object.keys(counts).sort(function (a, b) { return counts[b] - counts[a]; }).slice(0, 12).forEach(function (e) {
      const link = el("a", { class: "eid swatch", href: "#" + layer + "/" + e }, e + " ×" + counts[e]);
      link.style.backgroundColor = "hsla(" + hue(Number(e)).toFixed(1) + ",70%,60%,0.45)";
      legend.appendChild(link);
      legend.appendChild(document.createTextNode(" "));
    });
  }
  [docSelect, layerSelect, modeSelect].forEach(function (node) { node.addEventListener("change", draw); });
  expertInput.addEventListener("input", draw);
  draw();
});
