/* ablate report — the page script (issue 25).
 *
 * Reads the JSON in <script id="ablate-data"> (the contract: notes/report-data.md) and draws
 * every section with the DOM and hand-written SVG: no library, no network, ES2017.
 *
 * For the tests: each section renders inside its own try/catch; a failure (or any window.onerror)
 * is pushed to `document.body.dataset.errors` (a JSON array of strings) and shown in a red box.
 * When every section has been tried, `document.body.dataset.ready = "1"`.
 *
 * Choices where the contract is silent (tell the Rust side if it should change):
 * - Missing arrays/objects are treated as empty and a missing number as null, so a partial file
 *   still renders; unknown `status` values get a neutral pill.
 * - Curves: the default group-by is the first grouping with at most 10 lines (a chart with 18
 *   lines reads poorly), else the first; but with one seed, "config", so the page opens on the
 *   view that shows why there is no band. "One seed" = no line of the "config" groupings (every
 *   grouping if there is none) has n ≥ 2. The `.no-band-note` is shown whenever the lines on
 *   screen have no band, and with one seed also on other groupings (their band is then the
 *   spread over other parameters, not seeds, and the note says so).
 * - A series' `pruned: true` is drawn dashed with "(pruned)", read as "every run of this line was
 *   stopped early" (a line with one pruned seed of three is mostly a full run: dashing it would
 *   mislead). An optional `n_pruned` (how many of the n runs were pruned) is shown as
 *   "(k of n pruned)" on lines that are not all pruned.
 * - Parallel coordinates: values of a "cat" axis missing from `values` are appended in order of
 *   appearance; a row whose chosen metric is null is drawn grey and dotted.
 * - The diff's default pair: `#diff=A,B` in the URL (instance ids), else the first two instances
 *   of the first stage whose instances' params differ. Clicking a parallel-coordinates row or an
 *   instance's "compare" buttons sets A/B.
 * - Deps are compared by position (the plan lists them in a stable order).
 * - The diff's curve chart takes its x label from the `curves` entry of A's stage and that metric
 *   (else "step"); `instances[].curves` pairs are [step, value] with value possibly null.
 * - Counts: any key besides `instances` gets a badge (so `diverged` shows when sent); `not_run`
 *   is the count key for the status "not run".
 * - `.no-band-note`'s text starts "one run per line: no band across seeds is drawn" in lower
 *   case (CSS capitalises the first letter), so a test can match the brief's words exactly.
 * For the Rust side: this file and report.css contain no "{{", so replacing the placeholders in
 * one pass (or DATA last) is safe; escaping "<" in the JSON is all the data needs.
 */
(function () {
  'use strict';

  const SVG_NS = 'http://www.w3.org/2000/svg';
  const errors = [];

  // ---------------------------------------------------------------- errors

  function recordError(where, err) {
    const msg = where + ': ' + (err && err.stack ? String(err.stack).split('\n').slice(0, 3).join(' | ') : String(err));
    errors.push(msg);
    document.body.dataset.errors = JSON.stringify(errors);
    const box = document.getElementById('errors');
    if (box) {
      box.hidden = false;
      box.textContent = 'This page hit ' + errors.length + ' error(s) while drawing; what is shown may be incomplete.\n' + errors.join('\n');
    }
  }
  window.onerror = function (message, source, line, col, err) {
    recordError('script', err || (message + ' at ' + line + ':' + col));
  };
  window.addEventListener('unhandledrejection', (e) => recordError('promise', e.reason));

  // ---------------------------------------------------------------- DOM helpers

  // h('td', {class: 'num', title: 't', onclick: fn}, child, ...): children may be strings, nodes,
  // arrays or null (skipped), which keeps the renderers declarative.
  function build(node, attrs, children) {
    for (const k in attrs || {}) {
      const v = attrs[k];
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else if (k === 'text') node.textContent = v;
      else node.setAttribute(k, v === true ? '' : v);
    }
    append(node, children);
    return node;
  }
  function append(node, children) {
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      if (Array.isArray(c)) append(node, c);
      else node.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
    }
  }
  const h = (tag, attrs, ...children) => build(document.createElement(tag), attrs, children);
  const s = (tag, attrs, ...children) => build(document.createElementNS(SVG_NS, tag), attrs, children);
  const clear = (node) => { while (node.firstChild) node.removeChild(node.firstChild); return node; };
  const sectionBody = (id) => document.querySelector('#' + id + ' .body') || document.getElementById(id);

  // Long labels are cut by CSS (ellipsis) and keep the whole text as a tooltip.
  const trunc = (text, cls) => h('span', { class: 'trunc' + (cls ? ' ' + cls : ''), title: text }, text);
  // In SVG there is no ellipsis: cut by characters, keep the whole text in a <title>.
  function svgText(attrs, text, maxChars) {
    const t = String(text);
    const cut = maxChars && t.length > maxChars ? t.slice(0, Math.max(1, maxChars - 1)) + '…' : t;
    return s('text', attrs, cut, cut !== t ? s('title', {}, t) : null);
  }

  // ---------------------------------------------------------------- numbers

  const isNum = (v) => typeof v === 'number' && isFinite(v);

  function fmt(v) {
    if (!isNum(v)) return v === null || v === undefined ? '—' : String(v);
    const a = Math.abs(v);
    if (Number.isInteger(v) && a < 1e6) return String(v);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
    return String(Number(v.toPrecision(4)));
  }
  const fmtDiff = (v) => (isNum(v) ? (v > 0 ? '+' : v < 0 ? '−' : '') + fmt(Math.abs(v)) : '—');

  function fmtSeconds(v) {
    if (!isNum(v)) return '—';
    if (v < 60) return (v < 10 ? v.toFixed(2) : v.toFixed(1)) + ' s';
    const m = Math.floor(v / 60);
    return m < 60 ? m + ' min ' + Math.round(v - 60 * m) + ' s' : Math.floor(m / 60) + ' h ' + (m % 60) + ' min';
  }

  function extent(values) {
    let lo = Infinity, hi = -Infinity;
    for (const v of values) if (isNum(v)) { if (v < lo) lo = v; if (v > hi) hi = v; }
    return lo <= hi ? [lo, hi] : null;
  }

  // Ticks at 1, 2 or 5 × 10^k; the domain is widened to whole ticks so lines never touch the frame.
  function niceTicks(lo, hi, count, integer) {
    if (lo === hi) { const pad = lo === 0 ? 1 : Math.abs(lo) * 0.1; lo -= pad; hi += pad; }
    const raw = (hi - lo) / Math.max(1, count);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    let step = [1, 2, 5, 10].map((m) => m * mag).find((st) => st >= raw) || 10 * mag;
    if (integer) step = Math.max(1, Math.round(step));
    const start = Math.floor(lo / step + 1e-9) * step, end = Math.ceil(hi / step - 1e-9) * step;
    const ticks = [];
    for (let t = start; t <= end + step * 1e-6; t += step) ticks.push(Number(t.toPrecision(12)));
    const digits = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    const label = (t) => (Math.abs(step) >= 1e5 || (step < 1e-4 && t !== 0) ? t.toExponential(1) : t.toFixed(digits));
    return { lo: start, hi: end, ticks, label };
  }

  // Decades, with 2 and 5 between them when the range is short (a loss over one decade).
  function logTicks(lo, hi) {
    const d0 = Math.floor(Math.log10(lo)), d1 = Math.ceil(Math.log10(hi));
    const mults = d1 - d0 <= 1 ? [1, 2, 3, 5] : d1 - d0 <= 3 ? [1, 2, 5] : [1];
    const ticks = [];
    for (let d = d0; d <= d1; d++) for (const m of mults) {
      const t = Number((m * Math.pow(10, d)).toPrecision(6));
      if (t >= lo * 0.999 && t <= hi * 1.001) ticks.push(t);
    }
    return { lo, hi, ticks, label: fmt };
  }

  // A scale maps a domain value to a pixel; log scales take log10 first.
  function scale(kind, d0, d1, r0, r1) {
    const f = kind === 'log' ? Math.log10 : (v) => v;
    const a = f(d0), b = f(d1);
    const span = b - a || 1;
    return (v) => r0 + ((f(v) - a) / span) * (r1 - r0);
  }

  // ---------------------------------------------------------------- colours

  // Okabe–Ito (colour-blind safe) without its yellow, which vanishes on white; after seven lines
  // the colours repeat with a dash pattern so no two lines look the same.
  const PALETTE = ['#0072B2', '#E69F00', '#009E73', '#D55E00', '#CC79A7', '#56B4E9', '#7a5c3a'];
  const colourOf = (i) => PALETTE[i % PALETTE.length];
  function dashOf(i, pruned) {
    if (pruned) return '5 4';
    return ['', '9 3', '2 3', '9 3 2 3'][Math.floor(i / PALETTE.length) % 4];
  }

  // viridis, sampled: a sequential scale that stays readable in grey and for colour-blind readers.
  const VIRIDIS = ['#440154', '#482878', '#3e4989', '#31688e', '#26828e', '#1f9e89', '#35b779', '#6ece58', '#b5de2b', '#fde725'];
  const darkMode = () => !!(window.matchMedia && window.matchMedia('(prefers-color-scheme: dark)').matches);
  function viridis(t) {
    const x = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
    const i = Math.min(VIRIDIS.length - 2, Math.floor(x)), f = x - i;
    const c = (hex, k) => parseInt(hex.slice(1 + 2 * k, 3 + 2 * k), 16);
    const rgb = [0, 1, 2].map((k) => Math.round(c(VIRIDIS[i], k) * (1 - f) + c(VIRIDIS[i + 1], k) * f));
    return 'rgb(' + rgb.join(',') + ')';
  }
  // goodness 1 = best. The best rows get the colour that stands out from the background:
  // dark purple on a light page, bright yellow on a dark one.
  const goodColour = (g) => (darkMode() ? viridis(0.15 + 0.85 * g) : viridis(0.9 * (1 - g)));

  // ---------------------------------------------------------------- tooltip

  function showTip(evt, content) {
    const tip = document.getElementById('tooltip');
    if (!tip) return;
    clear(tip);
    append(tip, [content]);
    tip.hidden = false;
    const pad = 14, w = tip.offsetWidth, hgt = tip.offsetHeight;
    let x = evt.pageX + pad, y = evt.pageY + pad;
    if (x + w > window.scrollX + document.documentElement.clientWidth - 4) x = evt.pageX - pad - w;
    if (y + hgt > window.scrollY + window.innerHeight - 4) y = evt.pageY - pad - hgt;
    tip.style.left = Math.max(0, x) + 'px';
    tip.style.top = Math.max(0, y) + 'px';
  }
  function hideTip() {
    const tip = document.getElementById('tooltip');
    if (tip) tip.hidden = true;
  }

  // ---------------------------------------------------------------- sorting

  // Numbers before strings, numbers numerically, strings naturally ("step=10" after "step=9").
  function compareValues(a, b) {
    if (isNum(a) && isNum(b)) return a - b;
    if (isNum(a)) return -1;
    if (isNum(b)) return 1;
    return String(a).localeCompare(String(b), undefined, { numeric: true });
  }

  // Header clicks sort `items` (each with a .rows list of <tr>) by keyOf(item, column); null and
  // missing values always go last, whichever the direction.
  function makeSortable(ths, tbody, items, keyOf, onSorted) {
    let current = -1, dir = 1;
    ths.forEach((th, col) => {
      if (!th) return;
      th.classList.add('sortable');
      th.title = th.title || 'sort by this column';
      th.addEventListener('click', () => {
        dir = current === col ? -dir : 1;
        current = col;
        ths.forEach((o) => o && o.classList.remove('sort-asc', 'sort-desc'));
        th.classList.add(dir > 0 ? 'sort-asc' : 'sort-desc');
        const keyed = items.map((it, i) => ({ it, i, k: keyOf(it, col) }));
        keyed.sort((x, y) => {
          const xn = x.k === null || x.k === undefined || x.k === '', yn = y.k === null || y.k === undefined || y.k === '';
          if (xn || yn) return xn && yn ? x.i - y.i : xn ? 1 : -1;
          return dir * compareValues(x.k, y.k) || x.i - y.i;
        });
        const frag = document.createDocumentFragment();
        for (const { it } of keyed) for (const tr of it.rows()) frag.appendChild(tr);
        tbody.appendChild(frag);
        if (onSorted) onSorted();
      });
    });
  }

  // ---------------------------------------------------------------- data

  function normalise(d) {
    const arr = (v) => (Array.isArray(v) ? v : []);
    d = d && typeof d === 'object' ? d : {};
    for (const k of ['tables', 'curves', 'parallel', 'claims', 'instances']) d[k] = arr(d[k]);
    d.counts = d.counts && typeof d.counts === 'object' ? d.counts : {};
    d.instances.forEach((inst, i) => {
      if (!isNum(inst.id)) inst.id = i;
      inst.params = inst.params && typeof inst.params === 'object' ? inst.params : {};
      inst.metrics = inst.metrics && typeof inst.metrics === 'object' ? inst.metrics : {};
      inst.curves = inst.curves && typeof inst.curves === 'object' ? inst.curves : {};
      inst.deps = arr(inst.deps);
      inst.code = arr(inst.code);
      inst.label = String(inst.label === undefined ? '#' + inst.id : inst.label);
    });
    return d;
  }

  const statusPill = (status) =>
    h('span', { class: 'pill s-' + String(status || 'unknown').replace(/\s+/g, '-') }, status || 'unknown');
  const shortKey = (k) => (k ? String(k).slice(0, 12) : '—');
  const paramText = (params) => Object.keys(params).map((k) => k + '=' + fmt(params[k])).join(', ');

  // ---------------------------------------------------------------- summary

  function renderSummary(d, root) {
    const c = d.counts;
    const order = ['ran', 'cached', 'submitted', 'failed', 'pruned', 'diverged', 'skipped', 'not_run'];
    const badge = (name, n, cls) =>
      h('span', { class: 'badge ' + (n ? cls : 'zero') }, h('b', {}, fmt(isNum(n) ? n : 0)), ' ' + name.replace('_', ' '));
    const extra = Object.keys(c).filter((k) => k !== 'instances' && !order.includes(k));
    append(root, [
      h('h1', {}, 'ablate — ' + (d.pipeline || 'report')),
      h('div', { class: 'meta' },
        d.file ? h('span', {}, h('code', {}, d.file)) : null,
        d.generated ? h('span', {}, 'generated ' + d.generated) : null,
        h('span', {}, 'ablate ' + (d.ablate_version || '?') + (d.git_rev ? ' (' + d.git_rev + ')' : ''))),
      h('div', { class: 'badges' },
        h('span', { class: 'badge' }, h('b', {}, fmt(isNum(c.instances) ? c.instances : d.instances.length)), ' instances'),
        order.filter((k) => k in c || ['ran', 'cached', 'failed'].includes(k))
          .map((k) => badge(k, c[k], 's-' + k.replace('_', '-'))),
        extra.map((k) => badge(k, c[k], ''))),
      d.stats_note ? h('p', { class: 'stats-note' }, d.stats_note) : null,
    ]);
  }

  // ---------------------------------------------------------------- report tables

  function renderTables(d, root) {
    if (!d.tables.length) { root.appendChild(h('p', { class: 'muted' }, nothingYet(d, 'report.table', 'This pipeline has no report.table stage.'))); return; }
    for (const t of d.tables) {
      const cols = Array.isArray(t.columns) ? t.columns : [];
      const rows = Array.isArray(t.rows) ? t.rows : [];
      const numeric = cols.map((c) => c && c.kind === 'stat');
      const ths = cols.map((c, j) => h('th', { class: numeric[j] ? 'num' : null, title: c.name }, c.name));
      const items = rows.map((row) => {
        const tr = h('tr', {}, cols.map((_, j) => tableCell(row[j], numeric[j])));
        return { row, rows: () => [tr], tr };
      });
      const tbody = h('tbody', {}, items.map((it) => it.tr));
      if (!rows.length) tbody.appendChild(h('tr', {}, h('td', { colspan: Math.max(1, cols.length), class: 'muted' }, 'no rows')));
      makeSortable(ths, tbody, items, (it, j) => (it.row[j] ? it.row[j].sort : null));
      // The heading sits above the table, not in a <caption>: a caption is as wide as its
      // table, and squeezed a long note under a two-column table into a narrow strip.
      root.appendChild(h('div', { class: 'table-wrap' },
        h('div', { class: 'table-cap' },
          h('span', { class: 'stage' }, t.stage || ''),
          h('span', { class: 'cap-title' }, t.title || ''),
          t.note ? h('span', { class: 'note' }, t.note) : null),
        h('table', { class: 'report-table' },
          h('thead', {}, h('tr', {}, ths)),
          tbody)));
    }
  }

  function tableCell(cell, numeric) {
    if (!cell) return h('td', { class: numeric ? 'num' : null }, '');
    return h('td', { class: (numeric ? 'num' : '') + (cell.best ? ' best' : ''), title: cell.title || null },
      h('span', { class: 'v', title: numeric || cell.title ? null : cell.text }, cell.text === undefined ? fmt(cell.sort) : cell.text),
      cell.ci ? h('span', { class: 'sub ci' }, cell.ci) : null,
      cell.delta ? h('span', { class: 'sub delta' }, cell.delta) : null);
  }

  // ---------------------------------------------------------------- line chart (curves, diff)

  // series: [{label, colour, dash, step[], mean[], lo[], hi[], hidden}]; draws mean lines, bands
  // where lo/hi are numbers, axes, and a hover rule with a tooltip of the values at one step.
  function lineChart(series, opts) {
    const W = 860, H = opts.height || 380, m = { l: 66, r: 18, t: 14, b: 48 };
    const pw = W - m.l - m.r, ph = H - m.t - m.b;
    const logY = !!opts.logY;
    const okY = (v) => isNum(v) && (!logY || v > 0);
    const shown = series.filter((sr) => !sr.hidden);
    const xs = [], ys = [];
    for (const sr of shown) {
      sr.step.forEach((x, i) => {
        if (!isNum(x) || !okY(sr.mean[i])) return;
        xs.push(x); ys.push(sr.mean[i]);
        if (okY(sr.lo[i])) ys.push(sr.lo[i]);
        if (okY(sr.hi[i])) ys.push(sr.hi[i]);
      });
    }
    const svg = s('svg', { class: 'curve-chart', viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': opts.yLabel + ' against ' + opts.xLabel });
    const xe = extent(xs) || [0, 1], ye = extent(ys) || [0, 1];
    const xt = niceTicks(xe[0], xe[1], 8, xs.every(Number.isInteger));
    let yt;
    if (logY) {
      yt = logTicks(ye[0] / 1.08, ye[1] * 1.08);
      if (yt.ticks.length < 2) yt = { lo: yt.lo, hi: yt.hi, ticks: [ye[0], ye[1]], label: fmt };
    } else yt = niceTicks(ye[0], ye[1], 6, false);
    const X = scale('num', xt.lo, xt.hi, m.l, m.l + pw);
    const Y = scale(logY ? 'log' : 'num', yt.lo, yt.hi, m.t + ph, m.t);

    const grid = s('g', { class: 'grid' }), axis = s('g', { class: 'axis' });
    for (const t of yt.ticks) {
      const y = Y(t);
      grid.appendChild(s('line', { x1: m.l, x2: m.l + pw, y1: y, y2: y }));
      axis.appendChild(s('line', { x1: m.l - 5, x2: m.l, y1: y, y2: y }));
      axis.appendChild(s('text', { x: m.l - 8, y: y + 4, 'text-anchor': 'end' }, yt.label(t)));
    }
    for (const t of xt.ticks) {
      const x = X(t);
      axis.appendChild(s('line', { x1: x, x2: x, y1: m.t + ph, y2: m.t + ph + 5 }));
      axis.appendChild(s('text', { x, y: m.t + ph + 19, 'text-anchor': 'middle' }, xt.label(t)));
    }
    axis.appendChild(s('path', { d: 'M' + m.l + ',' + m.t + 'V' + (m.t + ph) + 'H' + (m.l + pw) }));
    axis.appendChild(svgText({ class: 'axis-label', x: m.l + pw / 2, y: H - 6, 'text-anchor': 'middle' }, opts.xLabel, 80));
    axis.appendChild(svgText({ class: 'axis-label', transform: 'translate(15,' + (m.t + ph / 2) + ') rotate(-90)', 'text-anchor': 'middle' },
      opts.yLabel + (logY ? ' (log scale)' : ''), 50));
    append(svg, [grid, axis]);

    const bands = s('g', {}), lines = s('g', {});
    const byLabel = new Map();
    series.forEach((sr) => {
      if (sr.hidden) return;
      const g = { band: s('g', {}), line: s('g', {}) };
      byLabel.set(sr.label, g);
      // A band needs lo and hi at consecutive points; a gap (null) starts a new piece.
      for (const run of runsWhere(sr.step.length, (i) => isNum(sr.step[i]) && okY(sr.lo[i]) && okY(sr.hi[i]))) {
        if (run.length < 2) continue;
        const top = run.map((i) => X(sr.step[i]).toFixed(1) + ',' + Y(sr.hi[i]).toFixed(1));
        const bottom = run.slice().reverse().map((i) => X(sr.step[i]).toFixed(1) + ',' + Y(sr.lo[i]).toFixed(1));
        g.band.appendChild(s('path', { class: 'curve-band', d: 'M' + top.join('L') + 'L' + bottom.join('L') + 'Z', fill: sr.colour }));
      }
      let d = '';
      for (const run of runsWhere(sr.step.length, (i) => isNum(sr.step[i]) && okY(sr.mean[i]))) {
        d += 'M' + run.map((i) => X(sr.step[i]).toFixed(1) + ',' + Y(sr.mean[i]).toFixed(1)).join('L');
        // A lone point has no segment to stroke: mark it with a dot.
        if (run.length === 1) {
          g.line.appendChild(s('circle', { class: 'curve-dot', cx: X(sr.step[run[0]]), cy: Y(sr.mean[run[0]]), r: 3.5, fill: sr.colour }));
        }
      }
      const path = s('path', { class: 'curve-line' + (sr.pruned ? ' pruned' : ''), d: d || 'M0,0', stroke: sr.colour, 'stroke-dasharray': sr.dash || null },
        s('title', {}, sr.label));
      g.line.insertBefore(path, g.line.firstChild);
      bands.appendChild(g.band);
      lines.appendChild(g.line);
    });
    append(svg, [bands, lines]);
    if (!shown.length) {
      svg.appendChild(s('text', { x: m.l + pw / 2, y: m.t + ph / 2, 'text-anchor': 'middle' }, series.length ? 'every line is hidden' : 'no data'));
    }

    // Hover: the nearest step of any shown line; the tooltip lists each line's value there.
    const allSteps = Array.from(new Set(xs)).sort((a, b) => a - b);
    const rule = s('line', { class: 'hover-rule', y1: m.t, y2: m.t + ph, visibility: 'hidden' });
    const overlay = s('rect', { x: m.l, y: m.t, width: pw, height: ph, fill: 'transparent' });
    svg.appendChild(rule);
    svg.appendChild(overlay);
    overlay.addEventListener('mousemove', (evt) => {
      if (!allSteps.length) return;
      const box = svg.getBoundingClientRect();
      const vx = ((evt.clientX - box.left) / box.width) * W;
      let best = allSteps[0];
      for (const st of allSteps) if (Math.abs(X(st) - vx) < Math.abs(X(best) - vx)) best = st;
      rule.setAttribute('x1', X(best)); rule.setAttribute('x2', X(best)); rule.setAttribute('visibility', 'visible');
      const rows = [];
      for (const sr of shown) {
        const i = sr.step.indexOf(best);
        if (i < 0 || !isNum(sr.mean[i])) continue;
        const band = isNum(sr.lo[i]) && isNum(sr.hi[i]) ? ' [' + fmt(sr.lo[i]) + ', ' + fmt(sr.hi[i]) + ']' : '';
        rows.push(h('tr', {}, h('td', {}, h('span', { style: 'color:' + sr.colour }, '━ '), trunc(sr.label)), h('td', { class: 'num' }, fmt(sr.mean[i]) + band)));
      }
      const more = rows.length > 14 ? h('div', { class: 'muted' }, '… and ' + (rows.length - 14) + ' more') : null;
      showTip(evt, [h('div', { class: 't-head' }, opts.xLabel + ' ' + fmt(best)), h('table', {}, rows.slice(0, 14)), more]);
    });
    overlay.addEventListener('mouseleave', () => { rule.setAttribute('visibility', 'hidden'); hideTip(); });

    return {
      svg,
      // Legend hover: fade every other line so one can be followed through a crowd.
      focus(label) {
        byLabel.forEach((g, l) => {
          const fade = label !== null && l !== label;
          g.line.classList.toggle('faded', fade);
          g.band.classList.toggle('faded', fade);
        });
      },
    };
  }

  // Maximal runs of consecutive indices where ok(i) holds.
  function runsWhere(n, ok) {
    const runs = [];
    let cur = [];
    for (let i = 0; i < n; i++) {
      if (ok(i)) cur.push(i);
      else if (cur.length) { runs.push(cur); cur = []; }
    }
    if (cur.length) runs.push(cur);
    return runs;
  }

  function swatch(colour, dash) {
    return s('svg', { width: 22, height: 8, viewBox: '0 0 22 8', style: 'width:22px;flex:0 0 auto' },
      s('line', { x1: 1, x2: 21, y1: 4, y2: 4, stroke: colour, 'stroke-width': 2.5, 'stroke-dasharray': dash || null }));
  }

  // ---------------------------------------------------------------- curves

  const looksLossLike = (name) => /loss|err|nll|mse|mae|perplex|ppl|regret|dist/i.test(name);

  function renderCurves(d, root) {
    const entries = d.curves.filter((c) => c && Array.isArray(c.groupings) && c.groupings.length);
    if (!entries.length) { root.appendChild(h('p', { class: 'muted' }, 'No stage of this pipeline logged curves (metrics.jsonl or a built-in trainer\'s log).')); return; }
    for (const e of entries) {
      for (const g of e.groupings) {
        g.series = (Array.isArray(g.series) ? g.series : []).map((sr) => {
          const step = Array.isArray(sr.step) ? sr.step : [];
          const col = (k) => step.map((_, i) => (Array.isArray(sr[k]) && isNum(sr[k][i]) ? sr[k][i] : null));
          return {
            label: String(sr.label === undefined ? '' : sr.label), n: isNum(sr.n) ? sr.n : 0, step,
            mean: col('mean'), lo: col('lo'), hi: col('hi'), pruned: !!sr.pruned, nPruned: isNum(sr.n_pruned) ? sr.n_pruned : null,
          };
        });
      }
    }
    // With one seed per configuration no line can carry a band across seeds: say so plainly.
    const seedGroupings = [];
    for (const e of entries) {
      const cfg = e.groupings.filter((g) => g.by === 'config');
      seedGroupings.push(...(cfg.length ? cfg : e.groupings));
    }
    const oneSeed = !seedGroupings.some((g) => g.series.some((sr) => sr.n >= 2));

    const state = { entry: 0, by: defaultGrouping(entries[0], oneSeed), logY: false, hidden: new Set() };
    const entrySel = h('select', { 'aria-label': 'stage and metric' },
      entries.map((e, i) => h('option', { value: i }, (e.stage || '?') + ' · ' + (e.metric || '?'))));
    const bySel = h('select', { 'aria-label': 'group by' });
    const logBox = h('input', { type: 'checkbox' });
    const logLabel = h('label', {}, logBox, ' log y');
    const note = h('p', { class: 'no-band-note', hidden: true });
    const chartBox = h('div', { class: 'chart-box' });
    const legend = h('ul', { class: 'legend', 'aria-label': 'legend: click to hide or show a line' });

    function fillBy() {
      clear(bySel);
      entries[state.entry].groupings.forEach((g, i) => bySel.appendChild(h('option', { value: i }, g.by === 'config' ? 'configuration (all but the seed)' : String(g.by))));
      bySel.value = String(state.by);
    }
    function draw() {
      const e = entries[state.entry], g = e.groupings[state.by] || e.groupings[0];
      const series = g.series.map((sr, i) => Object.assign({}, sr, {
        colour: colourOf(i), dash: dashOf(i, sr.pruned), hidden: state.hidden.has(sr.label),
      }));
      const positive = series.every((sr) => sr.mean.every((v) => v === null || v > 0));
      logLabel.hidden = !positive;
      const chart = lineChart(series, { xLabel: e.x || 'step', yLabel: e.metric || '', logY: state.logY && positive });
      clear(chartBox).appendChild(chart.svg);
      clear(legend);
      // Many lines: the legend goes under the chart in columns, where whole labels fit.
      legend.classList.toggle('wide', series.length > 8);
      series.forEach((sr) => {
        const li = h('li', { class: sr.hidden ? 'off' : null, title: sr.label + ' — n = ' + sr.n + ' run(s); click to ' + (sr.hidden ? 'show' : 'hide') },
          swatch(sr.colour, sr.dash),
          h('span', { class: 'name' }, sr.label + (sr.pruned ? ' (pruned)' : sr.nPruned ? ' (' + sr.nPruned + ' of ' + sr.n + ' pruned)' : '')),
          h('span', { class: 'n' }, 'n=' + sr.n));
        li.addEventListener('click', () => {
          if (state.hidden.has(sr.label)) state.hidden.delete(sr.label); else state.hidden.add(sr.label);
          draw();
        });
        li.addEventListener('mouseenter', () => chart.focus(sr.label));
        li.addEventListener('mouseleave', () => chart.focus(null));
        legend.appendChild(li);
      });
      const viewHasBand = series.some((sr) => sr.lo.some(isNum) && sr.hi.some(isNum));
      note.hidden = !(oneSeed || !viewHasBand);
      if (!viewHasBand) {
        note.textContent = oneSeed
          ? 'one run per line: no band across seeds is drawn (each configuration ran with a single seed; add seeds to see the spread).'
          : 'one run per line here: no band across seeds is drawn for this grouping.';
      } else {
        note.textContent = 'each configuration ran with a single seed: the bands here are the spread over the other parameters\' values, not across seeds.';
      }
    }
    entrySel.addEventListener('change', () => {
      state.entry = Number(entrySel.value);
      state.by = defaultGrouping(entries[state.entry], oneSeed);
      state.hidden.clear();
      state.logY = false; logBox.checked = false;
      fillBy(); draw();
    });
    bySel.addEventListener('change', () => { state.by = Number(bySel.value); state.hidden.clear(); draw(); });
    logBox.addEventListener('change', () => { state.logY = logBox.checked; draw(); });

    append(root, [
      h('div', { class: 'controls' },
        h('label', {}, 'stage · metric ', entrySel),
        h('label', {}, 'group by ', bySel),
        logLabel,
        h('span', { class: 'note' }, 'line: mean; band: mean ± sd across the runs of the line')),
      note,
      d.thinned ? h('p', { class: 'note' }, 'Lines of more than 1,000 points are drawn from their ends and the lowest and ' +
        'highest points of each of 200 stretches, so spikes stay; means and bands are computed on every point.') : null,
      h('div', { class: 'chart-row' }, chartBox, legend),
    ]);
    fillBy();
    draw();
  }

  // With one seed the per-configuration view comes first, so the page says at once that there is
  // no band across seeds; otherwise the first grouping with few enough lines to read.
  function defaultGrouping(entry, oneSeed) {
    const cfg = entry.groupings.findIndex((g) => g.by === 'config');
    if (oneSeed && cfg >= 0) return cfg;
    const i = entry.groupings.findIndex((g) => g.series.length > 0 && g.series.length <= 10);
    return i < 0 ? 0 : i;
  }

  // ---------------------------------------------------------------- parallel coordinates

  const picks = { a: null, b: null, next: 'a', listeners: [] };
  function pick(id, side) {
    side = side || picks.next;
    picks[side] = id;
    picks.next = side === 'a' ? 'b' : 'a';
    // Keep the pair in the URL, so a reload or a shared link opens the same diff.
    if (picks.a !== null && picks.b !== null && history.replaceState) {
      try { history.replaceState(null, '', '#diff=' + picks.a + ',' + picks.b); } catch (e) { /* file:// may refuse; the pair still shows */ }
    }
    for (const fn of picks.listeners) fn();
  }

  function renderParallel(d, root, byId) {
    const entries = d.parallel.filter((p) => p && Array.isArray(p.axes) && p.axes.length);
    if (!entries.length) {
      root.appendChild(h('p', { class: 'muted' }, 'No sweep in this pipeline varies more than two parameters, so there is no parallel-coordinates view; the tables above show every combination.'));
      return;
    }
    root.appendChild(h('p', { class: 'note' },
      'One line per instance through its parameter values to a final metric, coloured by that metric. Hover a line to see its instance; click to compare it in the diff below (first click A, next B).'));
    for (const p of entries) root.appendChild(parallelEntry(p, byId));
  }

  function parallelEntry(p, byId) {
    const rows = Array.isArray(p.rows) ? p.rows.filter((r) => r && Array.isArray(r.values)) : [];
    const metrics = Array.isArray(p.metrics) && p.metrics.length ? p.metrics : Object.keys((rows[0] || {}).metrics || {});
    const lower = new Set(Array.isArray(p.lower_is_better) ? p.lower_is_better : []);
    const sel = h('select', { 'aria-label': 'metric' }, metrics.map((mt) => h('option', { value: mt }, mt + (lower.has(mt) ? ' (lower is better)' : ''))));
    const box = h('div', { class: 'chart-box full' });
    const bar = h('div', { class: 'scale-bar' });
    const hover = h('div', { class: 'hover-line muted' }, '\u00a0');
    const picked = h('div', { class: 'hover-line' });
    let metric = metrics[0];

    function showPicks() {
      clear(picked);
      const lab = (id) => (id === null ? '—' : byId.has(id) ? byId.get(id).label : '#' + id);
      if (picks.a === null && picks.b === null) return;
      append(picked, [h('span', { class: 'side-a' }, 'A '), trunc(lab(picks.a)), '   ', h('span', { class: 'side-b' }, 'B '), trunc(lab(picks.b)), '   ', h('a', { href: '#diff' }, 'see the diff')]);
    }
    function draw() {
      clear(box).appendChild(parallelChart(p, rows, metric, lower.has(metric), byId, hover));
      const lo = lower.has(metric);
      clear(bar);
      const stops = [0, 0.25, 0.5, 0.75, 1].map((g) => goodColour(g)).join(',');
      append(bar, [h('span', {}, 'worse'), h('span', { class: 'bar', style: 'background:linear-gradient(to right,' + stops + ')' }), h('span', {}, 'better'),
        h('span', {}, 'colour: rank by ' + metric + ' (' + (lo ? 'lower' : 'higher') + ' is better); grey dotted: no value')]);
      showPicks();
    }
    sel.addEventListener('change', () => { metric = sel.value; draw(); });
    picks.listeners.push(draw);
    const wrap = h('div', {},
      h('h3', {}, h('code', {}, p.stage || '?'), ' — ', rows.length + ' instance' + (rows.length === 1 ? '' : 's')),
      h('div', { class: 'controls' }, h('label', {}, 'metric ', sel)),
      box, bar, hover, picked);
    draw();
    return wrap;
  }

  function parallelChart(p, rows, metric, lowerBetter, byId, hoverLine) {
    const axes = p.axes.concat([{ name: metric, kind: 'metric' }]);
    const W = 1000, H = 380, m = { l: 70, r: 70, t: 40, b: 24 };
    const ph = H - m.t - m.b;
    const gap = (W - m.l - m.r) / Math.max(1, axes.length - 1);
    const axisX = (j) => (axes.length === 1 ? W / 2 : m.l + j * gap);
    // Axis names are centred on their axis: the outer ones may only use twice the margin.
    const maxChars = (j) => Math.max(6, Math.floor((j === 0 || j === axes.length - 1 ? Math.min(gap, 2 * m.l) : gap) / 7.5));
    const svg = s('svg', { class: 'parallel-chart', viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': 'parallel coordinates against ' + metric });
    const axisG = s('g', { class: 'axis' });
    const valueOf = (r, j) => (j < p.axes.length ? r.values[j] : r.metrics ? r.metrics[metric] : null);

    // One position function per axis; null/absent values sit below the axis, on a "—" mark.
    const pos = axes.map((a, j) => {
      const col = rows.map((r) => valueOf(r, j));
      const yNone = m.t + ph + 14;
      const ticksAt = (ys, label) => ys.forEach(([v, y]) => {
        // The metric axis is the last: its labels go right, where no line runs.
        const dir = j === axes.length - 1 ? 1 : -1;
        axisG.appendChild(s('line', { x1: axisX(j) + 4 * dir, x2: axisX(j), y1: y, y2: y }));
        axisG.appendChild(svgText({ class: 'tick', x: axisX(j) + 7 * dir, y: y + 4, 'text-anchor': dir > 0 ? 'start' : 'end' }, label(v), 14));
      });
      if (a.kind === 'cat') {
        const cats = (Array.isArray(a.values) ? a.values.slice() : []);
        for (const v of col) if (v !== null && v !== undefined && !cats.some((c) => String(c) === String(v))) cats.push(v);
        const y = (v) => {
          const i = cats.findIndex((c) => String(c) === String(v));
          if (i < 0) return yNone;
          return cats.length === 1 ? m.t + ph / 2 : m.t + ph - (i / (cats.length - 1)) * ph;
        };
        ticksAt(cats.map((c) => [c, y(c)]), String);
        return y;
      }
      const log = a.kind === 'log';
      const vals = col.concat(Array.isArray(a.values) ? a.values : []).filter((v) => isNum(v) && (!log || v > 0));
      const e = extent(vals);
      if (!e) return () => yNone;
      let t;
      if (a.kind !== 'metric' && Array.isArray(a.values) && a.values.length && a.values.length <= 8) {
        t = { lo: e[0], hi: e[1], ticks: a.values.filter(isNum), label: fmt };
      } else if (log) t = logTicks(e[0], e[1]);
      else t = niceTicks(e[0], e[1], 5, false);
      if (t.lo === t.hi) { t.lo = log ? t.lo / 2 : t.lo - 1; t.hi = log ? t.hi * 2 : t.hi + 1; }
      const sc = scale(log ? 'log' : 'num', t.lo, t.hi, m.t + ph, m.t);
      const y = (v) => (isNum(v) && (!log || v > 0) ? sc(v) : yNone);
      ticksAt(t.ticks.map((v) => [v, sc(v)]), t.label);
      return y;
    });
    axes.forEach((a, j) => {
      const x = axisX(j);
      axisG.appendChild(s('line', { x1: x, x2: x, y1: m.t, y2: m.t + ph }));
      const name = a.kind === 'metric' ? a.name + (lowerBetter ? ' ↓' : ' ↑') : a.name + (a.kind === 'log' ? ' (log)' : '');
      axisG.appendChild(svgText({ class: 'axis-label', x, y: m.t - 16, 'text-anchor': 'middle' }, name, maxChars(j)));
    });

    // Colour by rank of the metric, not its value: one outlier would otherwise squeeze every other
    // row into one colour (the axis still shows the values). The best rows are drawn last, on top.
    const mvals = rows.map((r) => (r.metrics && isNum(r.metrics[metric]) ? r.metrics[metric] : null));
    const ranked = rows.map((_, i) => i).filter((i) => mvals[i] !== null)
      .sort((a, b) => (lowerBetter ? mvals[b] - mvals[a] : mvals[a] - mvals[b]));
    const goodness = new Array(rows.length).fill(null);
    ranked.forEach((i, k) => { goodness[i] = ranked.length === 1 ? 1 : k / (ranked.length - 1); });
    const order = rows.map((_, i) => i).filter((i) => goodness[i] === null).concat(ranked);
    const lines = s('g', {});
    for (const i of order) {
      const r = rows[i], g = goodness[i];
      const d = 'M' + axes.map((_, j) => axisX(j).toFixed(1) + ',' + pos[j](valueOf(r, j)).toFixed(1)).join('L');
      const sideOf = picks.a === r.instance ? 'a' : picks.b === r.instance ? 'b' : null;
      const path = s('path', {
        class: 'row' + (g === null ? ' none' : '') + (sideOf ? ' picked' : ''), d,
        stroke: g === null ? null : sideOf === 'a' ? '#0072B2' : sideOf === 'b' ? '#D55E00' : goodColour(g),
      });
      const hit = s('path', { class: 'hit', d });
      const inst = byId.get(r.instance);
      const label = inst ? inst.label : 'instance #' + r.instance;
      hit.addEventListener('mouseenter', (evt) => {
        svg.classList.add('hovering'); path.classList.add('hot');
        lines.appendChild(path); lines.appendChild(hit); // raise the hovered line above the others
        hoverLine.textContent = label + ' — ' + metric + ' = ' + fmt(mvals[i]);
        showTip(evt, [h('div', { class: 't-head' }, label), metric + ' = ' + fmt(mvals[i])]);
      });
      hit.addEventListener('mousemove', (evt) => showTip(evt, [h('div', { class: 't-head' }, label), metric + ' = ' + fmt(mvals[i])]));
      hit.addEventListener('mouseleave', () => { svg.classList.remove('hovering'); path.classList.remove('hot'); hideTip(); });
      hit.addEventListener('click', () => { hideTip(); pick(r.instance); });
      append(lines, [path, hit]);
      if (sideOf) {
        const y = pos[axes.length - 1](valueOf(r, axes.length - 1));
        svg.appendChild(s('text', { class: 'pick-tag', x: axisX(axes.length - 1) + 8, y: y + 4 }, sideOf.toUpperCase()));
      }
    }
    svg.insertBefore(lines, svg.firstChild);
    svg.insertBefore(axisG, lines.nextSibling);
    if (!rows.length) svg.appendChild(s('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle' }, 'no instance has a result yet'));
    return svg;
  }

  // What an empty section says: its stages' instances and why they have no result yet (not
  // run, submitted, failed), or `none` where the pipeline has no such stage.
  function nothingYet(d, op, none) {
    const pending = d.instances.filter((i) => i.op === op);
    if (!pending.length) return none;
    return 'No ' + op + ' stage has a result yet: ' + pending.map((i) => i.label + ' (' + (i.status || 'unknown') + ')').join(', ') + '.';
  }

  // ---------------------------------------------------------------- claims

  function renderClaims(d, root) {
    if (!d.claims.length) { root.appendChild(h('p', { class: 'muted' }, nothingYet(d, 'report.claims', 'This pipeline states no claims (report.claims).'))); return; }
    const tally = {};
    for (const c of d.claims) tally[c.verdict] = (tally[c.verdict] || 0) + 1;
    root.appendChild(h('p', { class: 'note' }, Object.keys(tally).map((k) => tally[k] + ' ' + k).join(' · ')));
    root.appendChild(h('div', { class: 'table-wrap' }, h('table', { class: 'claims-table' },
      h('thead', {}, h('tr', {}, h('th', {}, 'claim'), h('th', { class: 'num' }, 'observed'), h('th', {}, 'verdict'), h('th', {}, 'detail'), h('th', {}, 'stage'))),
      h('tbody', {}, d.claims.map((c) => h('tr', { class: 'claim' },
        h('td', { class: 'claim-text' }, c.name ? h('div', { class: 'claim-name' }, c.name) : null, h('code', {}, c.claim || '')),
        h('td', { class: 'num' }, c.observed === null || c.observed === undefined ? '—' : String(c.observed)),
        h('td', {}, h('span', { class: 'pill v-' + String(c.verdict || 'no data').replace(/\s+/g, '-') }, c.verdict || 'no data')),
        h('td', { class: 'muted claim-detail' }, c.detail || ''),
        h('td', { class: 'muted' }, h('code', {}, c.stage || ''))))))));
  }

  // ---------------------------------------------------------------- instances

  // The table is built once; filtering toggles `hidden` on rows, and a row's details are built
  // the first time it is opened, so a plan of thousands of instances stays responsive.
  function renderInstances(d, root) {
    const insts = d.instances;
    if (!insts.length) { root.appendChild(h('p', { class: 'muted' }, 'The plan has no instances.')); return; }
    const statuses = ['all'].concat(Array.from(new Set(insts.map((i) => i.status || 'unknown'))));
    const known = ['all', 'ran', 'cached', 'submitted', 'failed', 'pruned', 'diverged', 'skipped', 'not run'];
    statuses.sort((a, b) => (known.indexOf(a) < 0 ? 99 : known.indexOf(a)) - (known.indexOf(b) < 0 ? 99 : known.indexOf(b)));
    let status = 'all', text = '';

    const cols = [['label', (i) => i.label], ['stage', (i) => i.stage], ['op', (i) => i.op], ['status', (i) => i.status],
      ['device', (i) => i.device], ['wall time', (i) => (isNum(i.wall_time_s) ? i.wall_time_s : null)], ['started', (i) => i.started_at]];
    const ths = cols.map(([name]) => h('th', { class: name === 'wall time' ? 'num' : null }, name));
    const tbody = h('tbody', {});
    const items = insts.map((inst) => {
      const tr = h('tr', { class: 'inst', 'data-id': inst.id, tabindex: 0 },
        h('td', {}, trunc(inst.label, 'mono')),
        h('td', {}, inst.stage || ''),
        h('td', {}, h('code', {}, inst.op || '')),
        h('td', {}, statusPill(inst.status), inst.status_detail ? h('span', { class: 'sub', title: inst.status_detail }, trunc(inst.status_detail)) : null),
        h('td', {}, inst.device || '—'),
        h('td', { class: 'num' }, fmtSeconds(inst.wall_time_s)),
        h('td', { class: 'muted' }, inst.started_at || '—'));
      const item = {
        inst, tr, detail: null, open: false,
        hay: [inst.label, inst.stage, inst.op, inst.status, inst.status_detail, inst.key, inst.device, paramText(inst.params)].join(' ').toLowerCase(),
        rows: () => (item.detail ? [tr, item.detail] : [tr]),
      };
      const toggle = () => {
        item.open = !item.open;
        if (!item.detail) { item.detail = h('tr', { class: 'detail' }, h('td', { colspan: cols.length }, instanceDetail(inst, d))); tr.after(item.detail); }
        item.detail.hidden = !item.open;
        tr.classList.toggle('open', item.open);
      };
      tr.addEventListener('click', toggle);
      tr.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); toggle(); } });
      tbody.appendChild(tr);
      return item;
    });
    const countLine = h('div', { class: 'count-line' });
    function applyFilter() {
      const words = text.toLowerCase().split(/\s+/).filter(Boolean);
      let shown = 0;
      for (const it of items) {
        const ok = (status === 'all' || it.inst.status === status) && words.every((w) => it.hay.includes(w));
        it.tr.hidden = !ok;
        if (it.detail) it.detail.hidden = !ok || !it.open;
        if (ok) shown++;
      }
      countLine.textContent = 'showing ' + shown + ' of ' + items.length + ' instances; click a row for its key, params, deps, code, metrics and files';
    }
    const chips = statuses.map((st) => {
      const n = st === 'all' ? insts.length : insts.filter((i) => (i.status || 'unknown') === st).length;
      const b = h('button', { class: 'chip' + (st === 'all' ? ' on' : ''), type: 'button' }, st + ' (' + n + ')');
      b.addEventListener('click', () => { status = st; chips.forEach((c) => c.classList.toggle('on', c === b)); applyFilter(); });
      return b;
    });
    const search = h('input', { type: 'search', placeholder: 'filter: label, param=value, key, op…', size: 36, 'aria-label': 'filter instances' });
    search.addEventListener('input', () => { text = search.value; applyFilter(); });
    makeSortable(ths, tbody, items, (it, j) => cols[j][1](it.inst));
    append(root, [
      h('div', { class: 'controls' }, search, h('div', { class: 'chips' }, chips)),
      countLine,
      h('div', { class: 'table-wrap' }, h('table', { class: 'instances-table' }, h('thead', {}, h('tr', {}, ths)), tbody)),
    ]);
    applyFilter();
  }

  function instanceDetail(inst, d) {
    const kv = [];
    const row = (k, v) => { if (v !== null && v !== undefined && v !== '') kv.push(h('dt', {}, k), h('dd', {}, v)); };
    const list = (obj) => { const ks = Object.keys(obj); return ks.length ? ks.map((k) => h('span', {}, h('code', {}, k + '=' + fmt(obj[k])), ' ')) : h('span', { class: 'muted' }, 'none'); };
    row('key', h('code', {}, inst.key || '—'));
    row('status', [statusPill(inst.status), inst.status_detail ? ' ' + inst.status_detail : '']);
    row('params', list(inst.params));
    row('deps', inst.deps.length ? inst.deps.map((dep) => h('div', {}, trunc(String(dep.label)), ' ', h('code', { class: 'muted', title: dep.key || '' }, shortKey(dep.key)))) : h('span', { class: 'muted' }, 'none'));
    row('code', inst.code.length ? inst.code.map((c) => h('div', {}, h('code', {}, String(c[0])), ' ', String(c[1]))) : null);
    row('metrics', list(inst.metrics));
    row('curves', Object.keys(inst.curves).length ? Object.keys(inst.curves).map((k) => k + ' (' + (inst.curves[k] || []).length + ' points)').join(', ') : null);
    row('device', inst.device);
    row('wall time', fmtSeconds(inst.wall_time_s));
    row('started', inst.started_at);
    row('files', inst.files ? h('code', {}, inst.files) : null);
    const cmp = (side) => h('button', { type: 'button', onclick: (e) => { e.stopPropagation(); pick(inst.id, side); document.getElementById('diff').scrollIntoView(); } }, 'compare as ' + side.toUpperCase());
    return [
      h('dl', { class: 'kv' }, kv),
      d.instances.length > 1 ? h('div', { class: 'controls' }, cmp('a'), cmp('b')) : null,
      inst.stderr_tail ? [h('div', { class: 'muted' }, 'end of stderr'), h('pre', { class: 'stderr' }, String(inst.stderr_tail))] : null,
    ];
  }

  // ---------------------------------------------------------------- diff

  function defaultPair(d, byId) {
    const m = /(?:^|[#&])diff=(\d+),(\d+)/.exec(location.hash || '');
    if (m && byId.has(Number(m[1])) && byId.has(Number(m[2]))) return [Number(m[1]), Number(m[2])];
    const stages = [];
    for (const i of d.instances) if (!stages.includes(i.stage)) stages.push(i.stage);
    for (const st of stages) {
      const insts = d.instances.filter((i) => i.stage === st);
      const other = insts.find((i) => paramText(i.params) !== paramText(insts[0].params));
      if (other) return [insts[0].id, other.id];
    }
    const ids = d.instances.map((i) => i.id);
    return [ids[0], ids.length > 1 ? ids[1] : ids[0]];
  }

  function renderDiff(d, root, byId) {
    if (!d.instances.length) { root.appendChild(h('p', { class: 'muted' }, 'No instances to compare.')); return; }
    const pair = defaultPair(d, byId);
    if (picks.a === null) picks.a = pair[0];
    if (picks.b === null) picks.b = pair[1];
    const options = () => d.instances.map((i) => h('option', { value: i.id }, i.label.length > 90 ? i.label.slice(0, 89) + '…' : i.label));
    const selA = h('select', { 'aria-label': 'instance A' }, options());
    const selB = h('select', { 'aria-label': 'instance B' }, options());
    const out = h('div', {});
    let metric = null;
    selA.addEventListener('change', () => pick(Number(selA.value), 'a'));
    selB.addEventListener('change', () => pick(Number(selB.value), 'b'));
    const swap = h('button', { type: 'button', title: 'swap A and B' }, '⇄ swap');
    swap.addEventListener('click', () => { const a = picks.a; picks.a = picks.b; pick(a, 'b'); });

    function draw() {
      selA.value = String(picks.a); selB.value = String(picks.b);
      const A = byId.get(picks.a), B = byId.get(picks.b);
      clear(out);
      if (!A || !B) { out.appendChild(h('p', { class: 'muted' }, 'Pick two instances.')); return; }
      const head = (title) => h('thead', {}, h('tr', {}, h('th', {}, title), h('th', {}, h('span', { class: 'side-a' }, 'A')), h('th', {}, h('span', { class: 'side-b' }, 'B'))));
      const cmpTable = (title, rows, extraHead) => h('div', { class: 'table-wrap' }, h('table', { class: 'diff-table' },
        extraHead || head(title), h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: 4, class: 'muted' }, 'none')))));
      const sameOrNot = (a, b) => (String(a) === String(b) ? null : 'differs');

      const pkeys = union(Object.keys(A.params), Object.keys(B.params));
      const paramRows = pkeys.map((k) => h('tr', { class: sameOrNot(fmt(A.params[k]), fmt(B.params[k])) },
        h('td', {}, h('code', {}, k)), h('td', {}, k in A.params ? fmt(A.params[k]) : '—'), h('td', {}, k in B.params ? fmt(B.params[k]) : '—')));
      const nd = Math.max(A.deps.length, B.deps.length), depRows = [];
      const depCell = (dep) => (dep ? h('td', {}, trunc(String(dep.label)), h('code', { class: 'sub', title: dep.key || '' }, shortKey(dep.key))) : h('td', { class: 'muted' }, '—'));
      for (let i = 0; i < nd; i++) depRows.push(h('tr', { class: sameOrNot((A.deps[i] || {}).key, (B.deps[i] || {}).key) }, h('td', {}, String(i + 1)), depCell(A.deps[i]), depCell(B.deps[i])));
      const codeOf = (inst) => new Map(inst.code.map((c) => [String(c[0]), String(c[1])]));
      const ca = codeOf(A), cb = codeOf(B);
      const codeRows = union(Array.from(ca.keys()), Array.from(cb.keys())).map((k) => h('tr', { class: sameOrNot(ca.get(k), cb.get(k)) },
        h('td', {}, h('code', {}, k)), h('td', {}, ca.has(k) ? ca.get(k) : '—'), h('td', {}, cb.has(k) ? cb.get(k) : '—')));
      const mkeys = union(Object.keys(A.metrics), Object.keys(B.metrics));
      const metricRows = mkeys.map((k) => {
        const a = A.metrics[k], b = B.metrics[k];
        return h('tr', {}, h('td', {}, h('code', {}, k)), h('td', { class: 'num' }, fmt(a)), h('td', { class: 'num' }, fmt(b)), h('td', { class: 'num' }, isNum(a) && isNum(b) ? fmtDiff(b - a) : '—'));
      });
      const metricHead = h('thead', {}, h('tr', {}, h('th', {}, 'final metric'), h('th', { class: 'num' }, h('span', { class: 'side-a' }, 'A')), h('th', { class: 'num' }, h('span', { class: 'side-b' }, 'B')), h('th', { class: 'num' }, 'B − A')));
      const keyRow = h('tr', { class: sameOrNot(A.key, B.key) }, h('td', {}, 'key'), h('td', {}, h('code', { title: A.key || '' }, shortKey(A.key))), h('td', {}, h('code', { title: B.key || '' }, shortKey(B.key))));
      const statusRow = h('tr', { class: sameOrNot(A.status, B.status) }, h('td', {}, 'status'), h('td', {}, statusPill(A.status)), h('td', {}, statusPill(B.status)));
      append(out, [
        h('p', { class: 'note' }, 'Highlighted rows differ between A and B.'),
        h('div', { class: 'diff-grid' },
          h('div', {}, h('h3', {}, 'Parameters'), cmpTable('param', [keyRow, statusRow].concat(paramRows))),
          h('div', {}, h('h3', {}, 'Final metrics'), cmpTable('metric', metricRows, metricHead)),
          h('div', {}, h('h3', {}, 'Inputs (deps)'), cmpTable('dep', depRows)),
          h('div', {}, h('h3', {}, 'Code'), cmpTable('code', codeRows))),
      ]);
      const cnames = union(Object.keys(A.curves), Object.keys(B.curves)).filter((k) => Array.isArray(A.curves[k]) || Array.isArray(B.curves[k]));
      if (!cnames.length) { out.appendChild(h('p', { class: 'muted' }, 'Neither instance logged curves.')); return; }
      if (!cnames.includes(metric)) metric = cnames[0];
      const msel = h('select', { 'aria-label': 'curve metric' }, cnames.map((k) => h('option', { value: k }, k)));
      msel.value = metric;
      msel.addEventListener('change', () => { metric = msel.value; draw(); });
      // Name each side by what tells it apart (its differing params), not by a long shared prefix.
      const differing = pkeys.filter((k) => fmt(A.params[k]) !== fmt(B.params[k]));
      const nameOf = (inst, side) => side + (differing.length ? ': ' + differing.map((k) => k + '=' + fmt(inst.params[k])).join(', ') : '');
      const asSeries = (inst, side, colour) => {
        const pts = (Array.isArray(inst.curves[metric]) ? inst.curves[metric] : []).filter((pt) => Array.isArray(pt));
        return { label: nameOf(inst, side), colour, dash: '', step: pts.map((pt) => pt[0]), mean: pts.map((pt) => (isNum(pt[1]) ? pt[1] : null)), lo: pts.map(() => null), hi: pts.map(() => null), pruned: inst.status === 'pruned' };
      };
      const series = [asSeries(A, 'A', darkMode() ? '#56B4E9' : '#0072B2'), asSeries(B, 'B', darkMode() ? '#E69F00' : '#D55E00')];
      const entry = d.curves.find((c) => c && c.stage === A.stage && c.metric === metric);
      const chart = lineChart(series, { xLabel: (entry && entry.x) || 'step', yLabel: metric, height: 320 });
      append(out, [
        h('h3', {}, 'Curves'),
        h('div', { class: 'controls' }, h('label', {}, 'metric ', msel)),
        h('div', { class: 'chart-row' }, h('div', { class: 'chart-box' }, chart.svg),
          h('ul', { class: 'legend' }, series.map((sr, i) => h('li', { title: (i ? B : A).label }, swatch(sr.colour, sr.pruned ? '5 4' : ''), h('span', { class: 'name' }, sr.label + (sr.pruned ? ' (pruned)' : '')))))),
      ]);
    }
    picks.listeners.push(draw);
    append(root, [
      h('div', { class: 'controls' }, h('label', {}, h('span', { class: 'side-a' }, 'A '), selA), h('label', {}, h('span', { class: 'side-b' }, 'B '), selB), swap),
      out,
    ]);
    draw();
  }

  function union(a, b) {
    const out = a.slice();
    for (const k of b) if (!out.includes(k)) out.push(k);
    return out;
  }

  // ---------------------------------------------------------------- main

  function main() {
    let data = {};
    try {
      const node = document.getElementById('ablate-data');
      data = JSON.parse(node ? node.textContent : '{}');
    } catch (e) {
      recordError('data', e);
    }
    const d = normalise(data);
    const byId = new Map(d.instances.map((i) => [i.id, i]));
    const sections = [
      ['summary', renderSummary], ['tables', renderTables], ['curves', renderCurves], ['parallel', renderParallel],
      ['claims', renderClaims], ['instances', renderInstances], ['diff', renderDiff],
    ];
    for (const [id, render] of sections) {
      const root = sectionBody(id);
      if (!root) { recordError(id, 'the template has no #' + id); continue; }
      try {
        render(d, root, byId);
      } catch (e) {
        recordError(id, e);
      }
    }
    document.body.dataset.ready = '1';
  }

  main();
})();
