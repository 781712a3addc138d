"""The fixed parts of the HTML report (:mod:`kdbench.results.html`): its style sheet and its script.

The script reads the report's data from the ``<script type="application/json" id="kd-data">``
element and needs nothing from the network: plotly.js is inlined in the page before it.

- Sortable tables (``table.kd-sortable``): a click on a header sorts the rows by that column,
  a second click reverses them. A header marked ``data-sort="num"`` sorts by its cells'
  ``data-v`` numbers (cells without one last, whichever the direction); others by text. Ties
  keep their order before the click.
- Curves: per task (``div.kd-plot``, ``data-task`` its index in the data), one plotly figure
  of each method's mean curve over its finished runs with a min-max band; buttons choose the x
  axis (``data-axis="x"``: FLOPs or steps), the curve (``data-axis="y"``: the task's metric,
  agreement, KL(T‖S)) and the y scale (``data-axis="scale"``). Diverged runs are an ``x`` at their
  last evaluation; the teacher's own training curve is a legend entry, hidden until clicked.
  Every trace carries ``meta``: ``mean``, ``band``, ``diverged`` or ``teacher``, and ``uid``: that and the
  method's index in the task's methods (``mean-0``; plotly classes its SVG group ``tracemean-0``).
"""

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1400px;
       padding: 0 1.5rem 3rem; color: #1b1b1b; line-height: 1.45; }
nav { position: sticky; top: 0; background: #fff; padding: .5rem 0; border-bottom: 1px solid #ddd; z-index: 2; }
nav a { margin-right: 1.2rem; }
h1 { margin-bottom: .2rem; }
.kd-sub { color: #555; margin-top: 0; }
.kd-scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .88rem; }
th, td { border-bottom: 1px solid #e2e2e2; padding: .25rem .55rem; text-align: right; white-space: nowrap; }
th:first-child, td:first-child, td.kd-text, th.kd-text { text-align: left; }
th { background: #f4f5f7; position: relative; }
table.kd-sortable th { cursor: pointer; user-select: none; }
table.kd-sortable th::after { content: " \\2195"; color: #aaa; font-size: .8em; }
table.kd-sortable th[aria-sort="ascending"]::after { content: " \\25B2"; color: #333; }
table.kd-sortable th[aria-sort="descending"]::after { content: " \\25BC"; color: #333; }
td.kd-best { font-weight: 700; }
td.kd-wrap { white-space: normal; min-width: 14rem; text-align: left; }
p.kd-note { font-size: .85rem; color: #333; max-width: 80rem; margin: .3rem 0; }
.kd-plot { margin: 1rem 0 2rem; }
.kd-controls { font-size: .85rem; margin-bottom: .3rem; }
.kd-controls span { margin-right: .3rem; color: #555; }
.kd-controls button { margin-right: .25rem; border: 1px solid #bbb; background: #fff; border-radius: 3px;
                      padding: .1rem .5rem; cursor: pointer; }
.kd-controls button[aria-pressed="true"] { background: #2b5fa8; border-color: #2b5fa8; color: #fff; }
.kd-controls .kd-gap { display: inline-block; width: 1.2rem; }
.kd-figure { width: 100%; height: 460px; }
dl.kd-kv { display: grid; grid-template-columns: max-content auto; gap: .15rem 1rem; font-size: .88rem; }
dl.kd-kv dt { font-weight: 600; }
dl.kd-kv dd { margin: 0; }
code { background: #f4f5f7; padding: 0 .2rem; border-radius: 2px; }
"""

SCRIPT = r"""
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("kd-data").textContent);

  function sortKey(row, index, numeric) {
    var cell = row.cells[index];
    if (!numeric) { return cell.textContent; }
    var v = cell.getAttribute("data-v");
    return v === null || v === "" ? NaN : Number(v);
  }

  function sortBy(th) {
    var table = th.closest("table"), body = table.tBodies[0], index = th.cellIndex;
    var dir = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
    table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir);
    var numeric = th.getAttribute("data-sort") === "num", sign = dir === "ascending" ? 1 : -1;
    var rows = Array.prototype.map.call(body.rows, function (r, i) {
      return {row: r, i: i, k: sortKey(r, index, numeric)};
    });
    rows.sort(function (a, b) {
      if (numeric) {
        if (isNaN(a.k) !== isNaN(b.k)) { return isNaN(a.k) ? 1 : -1; }  // no value: last either way
        if (!isNaN(a.k) && a.k !== b.k) { return sign * (a.k < b.k ? -1 : 1); }
      } else {
        var c = a.k.localeCompare(b.k);
        if (c) { return sign * c; }
      }
      return a.i - b.i;
    });
    rows.forEach(function (o) { body.appendChild(o.row); });
  }

  document.querySelectorAll("table.kd-sortable th").forEach(function (th) {
    th.addEventListener("click", function () { sortBy(th); });
  });

  function esc(text) { return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;"); }

  function rgba(hex, alpha) {
    var n = parseInt(hex.slice(1), 16);
    return "rgba(" + (n >> 16) + "," + ((n >> 8) & 255) + "," + (n & 255) + "," + alpha + ")";
  }

  function methodTraces(task, m, k, x, y) {
    var s = (m.series[x] || {})[y], d = (m.diverged[x] || {})[y], out = [];
    if (s && m.n > 1) {
      out.push({type: "scatter", mode: "lines", x: s.x.concat(s.x.slice().reverse()),
                y: s.hi.concat(s.lo.slice().reverse()), fill: "toself", fillcolor: rgba(m.color, 0.18),
                line: {width: 0}, hoverinfo: "skip", legendgroup: m.method, showlegend: false,
                name: esc(m.method), meta: "band", uid: "band-" + k});
    }
    if (s) {
      out.push({type: "scatter", mode: "lines+markers", x: s.x, y: s.mean, name: esc(m.label), legendgroup: m.method,
                line: {color: m.color, width: 2}, marker: {size: 4}, meta: "mean", uid: "mean-" + k,
                customdata: s.x.map(function (_, i) { return [s.lo[i], s.hi[i]]; }),
                hovertemplate: "<b>" + esc(m.method) + "</b><br>" + esc(task.x[x]) + ": %{x:.4g}<br>" +
                               esc(y) + " mean: %{y:.4f}<br>min-max: %{customdata[0]:.4f} to %{customdata[1]:.4f}" +
                               "<extra></extra>"});
    }
    if (d && d.x.length) {  // a method with only diverged runs still gets its legend entry here
      out.push({type: "scatter", mode: "markers", x: d.x, y: d.y, name: esc(s ? m.method + " diverged" : m.label),
                legendgroup: m.method, showlegend: !s, meta: "diverged", uid: "diverged-" + k,
                marker: {symbol: "x", size: 10, color: m.color},
                hovertemplate: "<b>" + esc(m.method) + "</b>: diverged<br>%{x:.4g}, %{y:.4f}<extra></extra>"});
    }
    return out;
  }

  function traces(task, x, y) {
    var out = [];
    task.methods.forEach(function (m, k) { out = out.concat(methodTraces(task, m, k, x, y)); });
    task.teachers.forEach(function (t, k) {
      var s = (t.series[x] || {})[y];
      if (s) {
        out.push({type: "scatter", mode: "lines", x: s.x, y: s.mean, name: "teacher " + esc(t.teacher_id) +
                  " (its own training)", visible: "legendonly", meta: "teacher", uid: "teacher-" + k,
                  line: {color: "#666", dash: "dot"}});
      }
    });
    return out;
  }

  function layout(task, st) {
    var fidelity = st.y !== task.metric ? " (against the final teacher, evaluation cost)" : "";
    return {title: {text: esc(task.task) + ": mean over seeds, band min-max" + fidelity, font: {size: 15}},
            xaxis: {title: {text: esc(task.x[st.x])}, exponentformat: "e", zeroline: false},
            yaxis: {title: {text: esc(task.y[st.y])}, type: st.scale, zeroline: false},
            hovermode: "closest", margin: {t: 50, r: 20, b: 55, l: 70},
            legend: {orientation: "v", font: {size: 11}}};
  }

  var CONFIG = {responsive: true, displaylogo: false};

  document.querySelectorAll(".kd-plot").forEach(function (box) {
    var task = DATA.tasks[Number(box.getAttribute("data-task"))];
    var figure = box.querySelector(".kd-figure");
    var st = {x: task.default_x, y: task.metric, scale: "linear"};
    function draw() {
      box.querySelectorAll("button").forEach(function (b) {
        b.setAttribute("aria-pressed", String(st[b.getAttribute("data-axis")] === b.getAttribute("data-value")));
      });
      Plotly.react(figure, traces(task, st.x, st.y), layout(task, st), CONFIG);
    }
    box.querySelectorAll("button").forEach(function (b) {
      b.addEventListener("click", function () {
        st[b.getAttribute("data-axis")] = b.getAttribute("data-value");
        draw();
      });
    });
    draw();
  });
})();
"""
