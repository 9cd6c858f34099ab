(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("qkv-data").textContent);
  var H = D.heads, LQ = D.lq, LK = D.lk;
  var TABLE_MAX = 40;
  function $(id) { return document.getElementById(id); }
  var qBox = $("qkv-queries"), kBox = $("qkv-keys"), headBox = $("qkv-heads");
  var qEls = qBox.querySelectorAll("[data-q]"), kEls = kBox.querySelectorAll("[data-k]");
  var hEls = headBox ? headBox.querySelectorAll("[data-head]") : [];
  var stage = $("qkv-stage"), svg = $("qkv-lines"), status = $("qkv-status");
  var heat = $("qkv-heat"), heatTitle = $("qkv-heat-title"), sums = $("qkv-sums");
  var head = 0, sel = LQ > 0 ? 0 : -1, shown = -1, row = [], rowMax = 0;
  var trs = [], mark = null, started = false;
  /* Past a few dozen curves the picture is a tangle: fewer with many tokens. */
  var MAXLINES = stage.classList.contains("many") ? 16 : 64;

  function lab(a, i) { return a ? a[i] : String(i); }
  function hname(h) { return D.names ? D.names[h] : "Head " + h; }
  function wt(h, q, k) { var v = D.w[h][q * LK + k]; return typeof v === "number" ? v : NaN; }
  function num(v, d) { return isFinite(v) ? v.toFixed(d) : "NaN"; }
  function small(v) {
    if (!isFinite(v)) return "NaN";
    if (v === 0) return "0";
    if (v > 0 && v < 0.005) return "<0.01";
    return v.toFixed(2);
  }
  /* 0 -> white, 1 -> the accent blue rgb(9, 105, 218). */
  function shade(a) {
    a = isFinite(a) ? Math.max(0, Math.min(1, a)) : 0;
    return "rgb(" + Math.round(255 - 246 * a) + "," + Math.round(255 - 150 * a) + "," +
           Math.round(255 - 37 * a) + ")";
  }
  function qname(q) { return "query " + q + " “" + lab(D.q, q) + "”"; }
  function kname(k) { return "key " + k + " “" + lab(D.k, k) + "”"; }

  function describe(q, top, max, sum) {
    if (H === 0) return "There are no heads to show.";
    if (LQ === 0) return "There are no query tokens.";
    var s = H > 1 ? hname(head) + ": " + qname(q) : "Q" + qname(q).slice(1);
    if (LK === 0) return s + " has no keys to attend to.";
    if (!(max > 0)) return s + " attends to no key: its weights are all 0 (every key is masked).";
    return s + " attends most to " + kname(top) + " (" + num(max, 3) + "); its " + LK +
           " weights sum to " + num(sum, 3) + ".";
  }

  /* Shows query q's weights on the keys: the one code path for hover, click,
   * keys and the URL fragment. */
  function render(q) {
    var i, v, a, el, max = 0, sum = 0, top = -1, have = H > 0 && q >= 0 && q < LQ;
    shown = q;
    row = [];
    if (have) {
      for (i = 0; i < LK; i++) {
        v = wt(head, q, i);
        row.push(v);
        if (isFinite(v)) {
          sum += v;
          if (top < 0 || v > max) { max = v; top = i; }
        }
      }
    }
    rowMax = max;
    for (i = 0; i < kEls.length; i++) {
      el = kEls[i];
      v = have ? row[i] : NaN;
      a = max > 0 ? v / max : 0;
      el.setAttribute("data-w", have ? String(v) : "");
      el.style.backgroundColor = have ? shade(a) : "";
      el.classList.toggle("dark", a > 0.55);
      el.lastChild.textContent = have ? small(v) : "";
      el.title = kname(i) + (have ? " ← " + qname(q) + ": " + String(v) : "");
    }
    for (i = 0; i < qEls.length; i++) {
      qEls[i].classList.toggle("sel", i === sel);
      qEls[i].classList.toggle("peek", i === q && i !== sel);
    }
    status.setAttribute("data-head", String(head));
    status.setAttribute("data-q", String(q));
    status.textContent = describe(q, top, max, sum);
    for (i = 0; i < trs.length; i++) trs[i].classList.toggle("sel", i === q);
    if (mark) {
      mark.style.display = q >= 0 ? "" : "none";
      mark.style.top = (100 * q / LQ) + "%";
      mark.style.height = "max(2px, " + (100 / LQ) + "%)";
    }
    lines();
  }

  /* Curves from the shown query to its strongest keys, the strongest drawn
   * last; at most MAXLINES, none below 2% of the row's largest weight.
   * Each runs straight down out of the query block, fans out in the gap
   * and runs straight down into the key block, so that with many rows of
   * tokens the curves do not weave between them. */
  function lines() {
    var w = stage.clientWidth, h = stage.clientHeight, out = "", i;
    svg.setAttribute("width", w);
    svg.setAttribute("height", h);
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    if (row.length && rowMax > 0 && shown >= 0) {
      var idx = [];
      for (i = 0; i < row.length; i++) if (row[i] >= rowMax * 0.02) idx.push(i);
      idx.sort(function (x, y) { return row[y] - row[x] || x - y; });
      if (idx.length > MAXLINES) idx.length = MAXLINES;
      var sr = stage.getBoundingClientRect(), qr = qEls[shown].getBoundingClientRect();
      var x1 = (qr.left + qr.width / 2 - sr.left).toFixed(1), y1 = (qr.bottom - sr.top).toFixed(1);
      var yb = qBox.getBoundingClientRect().bottom - sr.top;
      var yk = kBox.getBoundingClientRect().top - sr.top, dy = Math.max(8, (yk - yb) / 2);
      var from = "M" + x1 + "," + y1 + "L" + x1 + "," + yb.toFixed(1) + "C" + x1 + "," +
                 (yb + dy).toFixed(1) + " ";
      for (i = idx.length - 1; i >= 0; i--) {
        var k = idx[i], kr = kEls[k].getBoundingClientRect(), a = row[k] / rowMax;
        var x2 = (kr.left + kr.width / 2 - sr.left).toFixed(1);
        out += "<path class=\"ln\" data-to=\"" + k + "\" d=\"" + from + x2 + "," +
               (yk - dy).toFixed(1) + " " + x2 + "," + yk.toFixed(1) + "L" + x2 + "," +
               (kr.top - sr.top).toFixed(1) + "\" stroke-opacity=\"" +
               (0.15 + 0.85 * a).toFixed(3) + "\" stroke-width=\"" + (0.75 + 3.25 * a).toFixed(2) +
               "\"></path>";
      }
    }
    svg.innerHTML = out;
  }

  /* The selected head's whole matrix: a table when small, else a canvas;
   * and the row sums that the softmax makes 1. */
  function buildHeat() {
    var r, c, v, td, th, tr, rs = [], rm = [], lo = Infinity, hi = -Infinity;
    heat.textContent = "";
    trs = [];
    mark = null;
    heatTitle.textContent = H > 1 ? hname(head) + ": every weight" : "Every weight";
    if (H === 0 || LQ === 0) {
      sums.textContent = "";
      return;
    }
    for (r = 0; r < LQ; r++) {
      var s = 0, m = 0;
      for (c = 0; c < LK; c++) {
        v = wt(head, r, c);
        if (isFinite(v)) { s += v; if (v > m) m = v; }
      }
      rs.push(s);
      rm.push(m);
      lo = Math.min(lo, s);
      hi = Math.max(hi, s);
    }
    sums.setAttribute("data-min", num(lo, 4));
    sums.setAttribute("data-max", num(hi, 4));
    if (LK === 0) {
      sums.textContent = "There are no keys: every row is empty.";
      return;
    }
    sums.textContent = "Rows are queries, columns keys. Each row sums to " +
      (num(lo, 3) === num(hi, 3) ? num(lo, 3) : "between " + num(lo, 3) + " and " + num(hi, 3)) +
      " (softmax makes it 1; a fully masked row is 0). Shade: weight ÷ the largest of its row.";
    if (LQ <= TABLE_MAX && LK <= TABLE_MAX) {
      var t = document.createElement("table"), numbers = LK <= 12;
      t.className = "heat" + (numbers ? " numbers" : "");
      tr = t.createTHead().insertRow();
      tr.appendChild(document.createElement("th"));
      for (c = 0; c < LK; c++) {
        th = document.createElement("th");
        var sp = document.createElement("span");
        sp.textContent = lab(D.k, c);
        th.appendChild(sp);
        th.title = kname(c);
        tr.appendChild(th);
      }
      th = document.createElement("th");
      th.textContent = "Σ";
      th.title = "row sum";
      tr.appendChild(th);
      var tb = t.createTBody();
      for (r = 0; r < LQ; r++) {
        tr = tb.insertRow();
        tr.setAttribute("data-r", String(r));
        th = document.createElement("th");
        th.textContent = lab(D.q, r);
        th.title = qname(r);
        tr.appendChild(th);
        for (c = 0; c < LK; c++) {
          v = wt(head, r, c);
          td = tr.insertCell();
          td.style.backgroundColor = shade(rm[r] > 0 ? v / rm[r] : 0);
          if (rm[r] > 0 && v / rm[r] > 0.55) td.className = "dark";
          if (numbers) td.textContent = small(v);
          td.title = qname(r) + " → " + kname(c) + ": " + String(v);
        }
        td = tr.insertCell();
        td.className = "sum";
        td.textContent = num(rs[r], 2);
        trs.push(tr);
      }
      heat.appendChild(t);
    } else {
      var cv = document.createElement("canvas"), wrap = document.createElement("div");
      cv.width = LK;
      cv.height = LQ;
      cv.className = "heat-img";
      cv.style.width = Math.min(720, Math.max(240, LK * 3)) + "px";
      cv.style.height = Math.min(720, Math.max(24, LQ * 3)) + "px";
      var ctx = cv.getContext("2d"), img = ctx.createImageData(LK, LQ), d = img.data, p = 0;
      for (r = 0; r < LQ; r++) {
        for (c = 0; c < LK; c++, p += 4) {
          v = wt(head, r, c);
          var a = rm[r] > 0 && isFinite(v) ? Math.max(0, Math.min(1, v / rm[r])) : 0;
          d[p] = 255 - 246 * a;
          d[p + 1] = 255 - 150 * a;
          d[p + 2] = 255 - 37 * a;
          d[p + 3] = 255;
        }
      }
      ctx.putImageData(img, 0, 0);
      wrap.className = "heat-wrap";
      wrap.appendChild(cv);
      mark = document.createElement("div");
      mark.className = "rowmark";
      wrap.appendChild(mark);
      heat.appendChild(wrap);
      var at = function (e) {
        var b = cv.getBoundingClientRect();
        return [Math.max(0, Math.min(LQ - 1, Math.floor((e.clientY - b.top) / b.height * LQ))),
                Math.max(0, Math.min(LK - 1, Math.floor((e.clientX - b.left) / b.width * LK)))];
      };
      cv.addEventListener("click", function (e) { select(at(e)[0]); });
      cv.addEventListener("mousemove", function (e) {
        var rc = at(e);
        cv.title = qname(rc[0]) + " → " + kname(rc[1]) + ": " + String(wt(head, rc[0], rc[1]));
      });
    }
  }

  function remember() {
    if (!started) return;
    try { history.replaceState(null, "", "#head=" + head + "&q=" + sel); } catch (e) { /* file: URLs may refuse */ }
  }
  function select(q) {
    if (!(q >= 0 && q < LQ)) return;
    sel = q;
    render(q);
    remember();
  }
  function setHead(h) {
    if (!(h >= 0 && h < H)) return;
    head = h;
    for (var i = 0; i < hEls.length; i++) {
      hEls[i].classList.toggle("on", i === h);
      hEls[i].setAttribute("aria-pressed", i === h ? "true" : "false");
    }
    buildHeat();
    render(sel);
    remember();
  }

  for (var i = 0; i < qEls.length; i++) qEls[i].title = qname(i);
  qBox.addEventListener("click", function (e) {
    var t = e.target.closest("[data-q]");
    if (t) select(+t.getAttribute("data-q"));
  });
  qBox.addEventListener("mouseover", function (e) {
    var t = e.target.closest("[data-q]");
    if (t) render(+t.getAttribute("data-q"));
  });
  qBox.addEventListener("mouseleave", function () { if (shown !== sel) render(sel); });
  if (headBox) headBox.addEventListener("click", function (e) {
    var t = e.target.closest("[data-head]");
    if (t) setHead(+t.getAttribute("data-head"));
  });
  heat.addEventListener("click", function (e) {
    var t = e.target.closest("tr[data-r]");
    if (t) select(+t.getAttribute("data-r"));
  });
  document.addEventListener("keydown", function (e) {
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
      select(sel + (e.key === "ArrowRight" ? 1 : -1));
      e.preventDefault();
    } else if (e.key === "]" || e.key === "[") {
      setHead(head + (e.key === "]" ? 1 : -1));
    }
  });
  var pending = false;
  window.addEventListener("resize", function () {
    if (pending) return;
    pending = true;
    requestAnimationFrame(function () { pending = false; lines(); });
  });
  window.addEventListener("load", lines);

  if (H > 0) setHead(0);
  else { buildHeat(); render(sel); }
  /* #head=H&q=Q selects as a click would; #click=Q, #clickhead=H and
   * #hover=Q dispatch real events on the elements (what the tests use). */
  var f = {};
  location.hash.slice(1).split("&").forEach(function (part) {
    var kv = part.split("=");
    if (kv.length === 2 && /^[0-9]+$/.test(kv[1])) f[kv[0]] = +kv[1];
  });
  if ("head" in f) setHead(f.head);
  if ("q" in f) select(f.q);
  if ("clickhead" in f && hEls[f.clickhead])
    hEls[f.clickhead].dispatchEvent(new MouseEvent("click", { bubbles: true }));
  if ("click" in f && qEls[f.click])
    qEls[f.click].dispatchEvent(new MouseEvent("click", { bubbles: true }));
  if ("hover" in f && qEls[f.hover])
    qEls[f.hover].dispatchEvent(new MouseEvent("mouseover", { bubbles: true }));
  started = true;
  document.body.setAttribute("data-ready", "1");
})();
