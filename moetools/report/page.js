// moe-report's page script: renders expert cards lazily, one page at a time, from the inline JSON
// (formats/report.md). No network, no library: the DOM is built with createElement/textContent, so
// token pieces and labels are never parsed as HTML.
(function () {
  "use strict";
  // The data block is JSON, or gzip + base64 for large reports (data-encoding), inflated with the
  // browser's own DecompressionStream: still nothing fetched.
  function decode(node) {
    if (node.getAttribute("data-encoding") !== "gzip+base64") return Promise.resolve(JSON.parse(node.textContent));
    const binary = atob(node.textContent.trim());
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Response(stream).text().then(JSON.parse);
  }
  decode(document.getElementById("moe-data")).then(start).catch(function (error) {
    document.getElementById("count").textContent = "could not read the report's data: " + error;
    console.error(error);
  });

  function start(DATA) {
  window.moeReport = DATA;
  const PAGE = 50;
  const experts = DATA.experts;
  const keys = DATA.keys;
  const state = { sort: "", desc: true, query: "", min: "", set: "", layer: "", page: 0, list: experts };
  // a compressed page holds the fields only a card shows in chunks of DATA.chunk experts (formats/report.md),
  // decoded the first time one of their cards is drawn
  const chunkNodes = document.querySelectorAll("script.moe-chunk"), chunkLoads = {}, chunkDone = {};
  experts.forEach(function (expert, i) { Object.defineProperty(expert, "_i", { value: i, enumerable: false }); });
  function loadChunk(k) {
    if (!chunkLoads[k]) chunkLoads[k] = decode(chunkNodes[k]).then(function (rows) {
      rows.forEach(function (fields, j) { Object.assign(experts[k * DATA.chunk + j], fields); });
      chunkDone[k] = true;
    });
    return chunkLoads[k];
  }
  function ensure(list) {   // null when every card of ``list`` can be drawn now, else a promise of that
    if (!DATA.chunk) return null;
    const need = {};
    list.forEach(function (expert) { const k = Math.floor(expert._i / DATA.chunk); if (!chunkDone[k]) need[k] = true; });
    const wanted = Object.keys(need);
    return wanted.length ? Promise.all(wanted.map(function (k) { return loadChunk(Number(k)); })) : null;
  }
  let drawn = 0;

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    if (attrs) for (const name in attrs) {
      if (name === "text") node.textContent = attrs[name];
      else if (name === "cls") node.className = attrs[name];
      else node.setAttribute(name, attrs[name]);
    }
    (children || []).forEach(function (child) { if (child) node.appendChild(child); });
    return node;
  }
  function fmt(value) {
    if (value === null || value === undefined) return "–";
    if (typeof value !== "number") return String(value);
    if (value !== 0 && (Math.abs(value) < 1e-3 || Math.abs(value) >= 1e5)) return value.toExponential(2);
    return String(Math.round(value * 1e4) / 1e4);
  }
  function score(expert, key) {
    const index = keys.indexOf(key);
    return index < 0 || !expert.v ? null : expert.v[index];
  }
  function showPiece(piece) { return piece.replace(/\n/g, "⏎").replace(/\t/g, "⇥"); }

  // -- one card ---------------------------------------------------------------------------------
  function contextLine(context, scale) {
    const line = el("div", { cls: "ctx" });
    context.p.forEach(function (piece, i) {
      const percent = context.a[i] || 0;  // of the expert's largest activation (formats/report.md)
      const span = el("span", { cls: "tok" + (percent > 0 ? " routed" : "") + (i === context.m ? " mark" : ""),
                                text: showPiece(piece), title: "activation " + fmt(percent * (scale || 0) / 100) });
      if (percent > 0) span.style.backgroundColor = "rgba(230,110,0," + (0.12 + 0.0078 * percent).toFixed(3) + ")";
      line.appendChild(span);
    });
    const where = [context.dom, context.doc].filter(Boolean).join(" · ");
    if (where) line.appendChild(el("span", { cls: "where", text: " — " + where }));
    return line;
  }
  function scoreB(expert, key) {
    const index = keys.indexOf(key);
    return index < 0 || !expert.b || !expert.b.v ? null : expert.b.v[index];
  }
  // a comparison's value pair: "A → B (Δ ±d)"; a plain page: the value
  function shown(expert, key) {
    const a = score(expert, key);
    if (!DATA.compare) return fmt(a);
    const b = scoreB(expert, key);
    const delta = a === null || b === null || a === undefined || b === undefined ? null : b - a;
    return fmt(a) + " → " + fmt(b) + " (Δ " + (delta === null ? "–" : (delta > 0 ? "+" : "") + fmt(delta)) + ")";
  }
  function scoreTable(expert) {
    if (!expert.v && !(expert.b && expert.b.v)) return null;
    const perDomain = {}, plain = [];
    keys.forEach(function (key, i) {
      const value = expert.v ? expert.v[i] : null, other = scoreB(expert, key);
      if ((value === null || value === undefined) && (other === null || other === undefined)) return;
      const cut = key.indexOf(":");
      if (cut > 0) {
        const metric = key.slice(0, cut), domain = key.slice(cut + 1);
        (perDomain[metric] = perDomain[metric] || {})[domain] = shown(expert, key);
      } else if (!/_(random|shuffled)$/.test(key)) plain.push(key);
    });
    const box = el("div", { cls: "scores" });
    const metrics = Object.keys(perDomain);
    if (metrics.length) {
      const head = el("tr", null, [el("th", { text: "metric" })].concat(DATA.domains.map(function (d) {
        return el("th", { text: d }); })));
      const rows = metrics.map(function (metric) {
        return el("tr", null, [el("th", { text: metric })].concat(DATA.domains.map(function (d) {
          return el("td", { text: perDomain[metric][d] === undefined ? "–" : perDomain[metric][d] }); })));
      });
      box.appendChild(el("table", { cls: "grid" }, [head].concat(rows)));
    }
    if (plain.length || expert.sd) {
      const list = el("ul", { cls: "plain" });
      if (expert.sd) list.appendChild(el("li", { text: "skew.domain = " + expert.sd + " (the domain routed to most)" }));
      plain.forEach(function (key) {
        const random = score(expert, key + "_random"), shuffled = score(expert, key + "_shuffled");
        list.appendChild(el("li", { text: key + " = " + shown(expert, key) +
          (random !== null ? "  (random-expert baseline " + fmt(random) + ")" : "") +
          (shuffled !== null ? "  (with a shuffled label " + fmt(shuffled) + ")" : "") }));
      });
      box.appendChild(list);
    }
    return box;
  }
  function histogram(expert) {
    if (!expert.h) return null;
    const top = Math.max.apply(null, expert.h.map(function (v) { return v || 0; }).concat([1e-12]));
    const box = el("div", { cls: "hist", title: DATA.histogram });
    DATA.domains.forEach(function (domain, i) {
      const value = expert.h[i] || 0;
      const bar = el("span", { cls: "bar" });
      bar.style.width = (100 * value / top).toFixed(1) + "%";
      box.appendChild(el("div", { cls: "hrow" }, [el("span", { cls: "hname", text: domain }),
        el("span", { cls: "htrack" }, [bar]), el("span", { cls: "hval", text: fmt(expert.h[i]) })]));
    });
    return box;
  }
  function section(title, body) {
    return body ? el("div", { cls: "section" }, [el("h4", { text: title }), body]) : null;
  }
  function card(expert) {
    const id = expert.l + "/" + expert.e;
    const head = el("div", { cls: "head" }, [
      el("a", { href: "#" + id, cls: "anchor", text: "layer " + expert.l + " · expert " + expert.e }),
      expert.sets ? el("span", { cls: "sets", text: expert.sets.map(function (s) { return DATA.sets[s].name; }).join(", ") }) : null,
      expert.hf ? el("span", { cls: "badge health", text: "⚠ " + expert.hf.join(", "),
        title: "routing health (see the Routing health panel): " + expert.hf.join(", ") }) : null,
    ]);
    // every label of the expert, one per labels stream given, an LLM's first (formats/report.md)
    const labels = [expert].concat(expert.more || []).map(function (item, i) {
      return el("div", { cls: "labelbox" + (i ? " other" : "") }, [
        el("div", { cls: "label" + (item.st === "failed" ? " failed" : ""),
          text: (item.flag ? "[" + item.flag + "] " : "") +
            (item.lab || (item.st === "failed" ? "no label: " + (item.err || "failed") : "no label")) }),
        item.ev ? el("div", { cls: "evidence", text: "evidence: " + item.ev }) : null,
        item.by ? el("div", { cls: "by", text: "explainer: " + item.by }) : null]);
    });
    if (DATA.compare) {   // the other run's label, and the routing change of this expert
      labels[0].insertBefore(el("div", { cls: "by", text: DATA.compare.a + ":" }), labels[0].firstChild);
      const other = expert.b || {};
      labels.push(el("div", { cls: "labelbox other compare-b" }, [el("div", { cls: "by", text: DATA.compare.b + ":" }),
        el("div", { cls: "label", text: other.lab || "no label" }),
        other.by ? el("div", { cls: "by", text: "explainer: " + other.by }) : null,
        other.hf ? el("span", { cls: "badge health", text: "⚠ " + DATA.compare.b + ": " + other.hf.join(", ") }) : null]));
      if (expert.rs !== undefined) labels.push(el("div", { cls: "by rs", text: "routing change " + DATA.compare.a + " → " +
        DATA.compare.b + ": shift " + fmt(expert.rs) + " (003 eq. 4: squared change of its mean router probability)" }));
    }
    const contexts = expert.c ? el("div", null, expert.c.map(function (c) { return contextLine(c, expert.as); })) : null;
    const lens = expert.ll ? el("div", { cls: "lens" }, expert.ll.map(function (item) {
      return el("span", { cls: "lt", text: showPiece(String(item[0])) + (item[1] ? " ×" + item[1] : "") }); })) : null;
    const scorer = expert.jv ? el("div", { cls: "by scorer", text: "scorer: " + (DATA.scorer || expert.jv[0][1]) }) : null;
    const holdout = expert.ho || expert.jv ? el("div", null, [scorer].concat((expert.jv || []).map(verdictStrip)).concat(
      (expert.ho || []).map(function (context) {
        const row = contextLine(context, expert.as);
        row.insertBefore(verdictBadge(context, expert.jv ? expert.jv[0][2] : null), row.firstChild);
        return row; }))) : null;
    const note = expert.ss ? el("div", { cls: "by", text: "samples: " + expert.ss + (expert.ft !== undefined ? " (" + expert.ft + " firing tokens)" : "") }) : null;
    return el("div", { cls: "card", id: "card-" + expert.l + "-" + expert.e, "data-key": id }, [head].concat(labels, [
      note, section("scores", scoreTable(expert)), section("domains — " + DATA.histogram + (DATA.compare ? " (" + DATA.compare.a + ")" : ""), histogram(expert)),
      section("top contexts (shaded by contribution; routed tokens underlined; the marked token boxed)", contexts),
      section("logit lens", lens),
      section(expert.jv ? "holdout examples with the scorer's verdicts (its mistakes first)" : "holdout examples",
        holdout)]));
  }
  // The scorer's verdict on one judged sample: right (✓) when most answered repeats said its truth.
  function judgement(y, yes, answered) {
    if (!answered) return { cls: "unk", mark: "?", said: "no answer (the judge failed)" };
    const said = 2 * yes > answered ? 1 : 2 * yes < answered ? 0 : null;
    const what = "said " + (said === null ? "1 and 0" : said) + (answered === 1 ? "" : " (" + yes + " of " + answered +
      " repeats said 1)");
    if (said === null) return { cls: "unk", mark: "≈", said: what };
    return said === y ? { cls: "ok", mark: "✓", said: what } : { cls: "bad", mark: "✗", said: what };
  }
  function verdictBadge(context, threshold) {
    const side = "holdout." + (context.pos ? "positive" : "negative") + (context.i !== undefined ? "[" + context.i + "]" : "");
    if (context.j === undefined)
      return el("span", { cls: "verdict " + (context.pos ? "pos" : "neg"), text: side + " · truth " + context.pos });
    const v = judgement(context.pos, context.j[0], context.j[1]);
    const similarity = context.s !== undefined ? " · similarity " + fmt(context.s) +
      (threshold !== null && threshold !== undefined ? " (cut-off " + fmt(threshold) + ")" : "") : "";
    return el("span", { cls: "verdict " + v.cls, text: v.mark + " " + side + " · truth " + context.pos + " · " + v.said + similarity });
  }
  function verdictStrip(item) {
    const rows = item[3];
    const marks = rows.map(function (row) {
      const v = judgement(row[0], row[2], row[3]);
      return el("span", { cls: "vbox " + v.cls, text: v.mark,
        title: "holdout." + (row[0] ? "positive" : "negative") + "[" + row[1] + "]: truth " + row[0] + ", " + v.said });
    });
    const right = marks.filter(function (m) { return m.className === "vbox ok"; }).length;
    const prompt = (item[0] === "mono" ? "the label" : "the P_domain(" + item[0] + ") label") +
      (item[4] ? " by " + item[4] : "");
    return el("div", { cls: "strip" }, [el("span", { cls: "by", text: prompt + ", judged by the " + (item[1] || "?") +
      " scorer: " + right + " of " + rows.length + " right " }), el("span", null, marks)]);
  }

  // -- list: filter, sort, paginate ------------------------------------------------------------
  function matches(expert) {
    if (state.query) {
      const text = ((expert.lab || "") + " " + (expert.more || []).map(function (m) { return m.lab || ""; }).join(" ") +
        " " + expert.l + "/" + expert.e).toLowerCase();
      if (text.indexOf(state.query) < 0) return false;
    }
    if (state.set !== "" && !(expert.sets && expert.sets.indexOf(Number(state.set)) >= 0)) return false;
    if (state.layer !== "" && String(expert.l) !== state.layer) return false;
    if (state.sort && state.min !== "" && !isNaN(Number(state.min))) {
      const value = score(expert, state.sort);
      if (value === null || value < Number(state.min)) return false;
    }
    return true;
  }
  function refresh() {
    filterSort();
    return render();
  }
  function filterSort() {
    let list = experts.filter(matches);
    if (state.sort) {
      const sign = state.desc ? -1 : 1;
      list = list.slice().sort(function (a, b) {
        const x = score(a, state.sort), y = score(b, state.sort);
        if (x === null && y === null) return 0;
        if (x === null) return 1;
        if (y === null) return -1;
        return sign * (x - y);
      });
    }
    state.list = list;
    state.page = Math.min(state.page, Math.max(0, Math.ceil(list.length / PAGE) - 1));
  }
  // draws the current page of cards; returns a promise, resolved once they are drawn
  function render() {
    const start = state.page * PAGE, token = ++drawn;
    const waiting = ensure(state.list.slice(start, start + PAGE));
    if (!waiting) { draw(); return Promise.resolve(); }
    document.getElementById("count").textContent = "reading the cards' data…";
    return waiting.then(function () { if (token === drawn) draw(); });
  }
  function draw() {
    const box = document.getElementById("cards");
    box.textContent = "";
    const start = state.page * PAGE;
    state.list.slice(start, start + PAGE).forEach(function (expert) { box.appendChild(card(expert)); });
    const pages = Math.max(1, Math.ceil(state.list.length / PAGE));
    document.getElementById("count").textContent = state.list.length + " of " + experts.length + " experts · page " +
      (state.page + 1) + " of " + pages;
    document.getElementById("prev").disabled = state.page === 0;
    document.getElementById("next").disabled = state.page + 1 >= pages;
  }
  function jump() {
    const match = /^#?(\d+)\/(\d+)$/.exec(decodeURIComponent(location.hash));
    if (!match) return;
    const key = match[1] + "/" + match[2];
    let index = state.list.findIndex(function (x) { return x.l + "/" + x.e === key; });
    if (index < 0) {  // filtered out: clear the filters, then look again
      state.query = ""; state.set = ""; state.layer = ""; state.min = "";
      ["search", "set", "layer", "min"].forEach(function (id) { const n = document.getElementById(id); if (n) n.value = ""; });
      filterSort();
      index = state.list.findIndex(function (x) { return x.l + "/" + x.e === key; });
    }
    if (index < 0) {
      return render().then(function () { document.getElementById("count").textContent += " · no expert " + key; });
    }
    state.page = Math.floor(index / PAGE);
    return render().then(function () {
      const target = document.getElementById("card-" + match[1] + "-" + match[2]);
      if (!target) return;
      document.querySelectorAll(".card.target").forEach(function (n) { n.classList.remove("target"); });
      target.classList.add("target");
      target.scrollIntoView();
    });
  }

  // -- controls ---------------------------------------------------------------------------------
  const sort = document.getElementById("sort");
  keys.forEach(function (key) { sort.appendChild(el("option", { value: key, text: key })); });
  const sets = document.getElementById("set");
  DATA.sets.forEach(function (s, i) { sets.appendChild(el("option", { value: String(i), text: s.name + " (" + s.size + ")" })); });
  const layer = document.getElementById("layer");
  Array.from(new Set(experts.map(function (x) { return x.l; }))).forEach(function (l) {
    layer.appendChild(el("option", { value: String(l), text: "layer " + l })); });
  document.getElementById("search").addEventListener("input", function (event) {
    state.query = event.target.value.trim().toLowerCase(); state.page = 0; refresh(); });
  sort.addEventListener("change", function (event) { state.sort = event.target.value; state.page = 0; refresh(); });
  document.getElementById("dir").addEventListener("change", function (event) {
    state.desc = event.target.value === "desc"; refresh(); });
  document.getElementById("min").addEventListener("input", function (event) { state.min = event.target.value; state.page = 0; refresh(); });
  sets.addEventListener("change", function (event) { state.set = event.target.value; state.page = 0; refresh(); });
  layer.addEventListener("change", function (event) { state.layer = event.target.value; state.page = 0; refresh(); });
  function turn(by) {
    state.page += by;
    render().then(function () { window.scrollTo(0, document.getElementById("controls").offsetTop); });
  }
  document.getElementById("prev").addEventListener("click", function () { turn(-1); });
  document.getElementById("next").addEventListener("click", function () { turn(1); });
  window.addEventListener("hashchange", jump);
  document.addEventListener("click", function (event) {   // a link to the card already in the hash: no hashchange
    const link = event.target.closest && event.target.closest("a[href^='#']");
    if (link && link.getAttribute("href") === location.hash) { event.preventDefault(); jump(); }
  });
  const first = refresh();
  (window.moeDraw || []).forEach(function (view) {   // the maps (maps.js) and other views drawn from DATA
    try { view(DATA); } catch (error) { console.error(error); }
  });
  Promise.all([first, jump()]).then(function () { document.body.setAttribute("data-ready", "1"); });
  }
})();
