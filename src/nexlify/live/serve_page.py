"""The HTML page of ``nexlify paper serve``: a static shell that fills itself from the JSON API.

Everything shown comes from ``api/status`` (every few seconds) and ``api/curves`` (when a new bar
was processed), written into the page with ``textContent`` only: event messages can hold
exchange error text, which must never be interpreted as HTML. plotly.js is served by the same
server from the installed package (no network). A token given in the page's address
(``?token=``) is sent back as an ``Authorization`` header, never written into the page.
"""

from __future__ import annotations

import html

REFRESH_SECONDS = 5.0
"""How often the page asks for the status: a new 1m bar shows within seconds."""

_STYLE = """body{font-family:system-ui,sans-serif;margin:16px auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:6px 0 18px;width:100%}td,th{border:1px solid #ccc;
padding:3px 7px;text-align:left;font-size:14px}th{background:#f3f3f3}
td.num{text-align:right}.warning td{background:#fff6dd}
.error td{background:#fde2e2}#banner{font-weight:bold;color:#b00}.live{color:#b00}
.alert{color:#fff;background:#b00;padding:0 6px}.alert:empty{display:none}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{border:1px solid #ccc;border-radius:6px;
padding:8px 12px;min-width:170px}.card b{display:block;font-size:20px}.meter{height:8px;
background:#eee;border-radius:4px;margin-top:4px}.meter div{height:8px;background:#d62728;
border-radius:4px}.chart{min-height:300px}.note{color:#555}"""

_SCRIPT = """
const REFRESH_MS = __REFRESH_MS__;
const token = new URLSearchParams(location.search).get('token');
const headers = token ? {'Authorization': 'Bearer ' + token} : {};
let lastCurveBar = undefined;
const fmt = (v, d = 2) => (v === null || v === undefined) ? '-' :
  Number(v).toLocaleString('en-US', {minimumFractionDigits: d, maximumFractionDigits: d});
const iso = t => (t === null || t === undefined) ? '-' :
  new Date(t * 1000).toISOString().slice(0, 16).replace('T', ' ');
function text(id, value) { document.getElementById(id).textContent = value; }
function fillTable(id, header, rows, rowClass) {
  const table = document.getElementById(id);
  table.replaceChildren();
  const head = table.insertRow();
  for (const h of header) { const th = document.createElement('th'); th.textContent = h;
    head.appendChild(th); }
  if (!rows.length) {
    const cell = table.insertRow().insertCell();
    cell.colSpan = header.length;
    cell.textContent = 'none';
  }
  rows.forEach((row, k) => {
    const tr = table.insertRow();
    if (rowClass) tr.className = rowClass(k);
    for (const cell of row) {
      const td = tr.insertCell();
      td.textContent = cell;
      if (/^[-+]?[0-9][0-9.,]*%?$/.test(String(cell))) td.className = 'num';
    }
  });
}
function describeOrder(o) {
  const kind = o.role || o.type || o.kind || '';
  const price = o.stop_price ?? o.trigger_price ?? o.price;
  return [kind, o.side, fmt(o.amount, 6), price ? '@ ' + fmt(price, 4) : '', '(' + o.status + ')']
    .filter(Boolean).join(' ');
}
function showAlerts(s) {
  const alerts = [];
  if (s.entries_blocked) alerts.push('New entries blocked: ' + s.entries_blocked);
  if (s.stop_requested) alerts.push('Stop requested at ' + s.stop_requested.requested_at +
    (s.stop_requested.flatten ? ' (flatten positions)' : '') + ', not handled yet');
  if (s.locked) alerts.push('Daily loss limit reached: no new entries until the next UTC day');
  text('alerts', alerts.join(' | '));
}
function showStatus(s) {
  showAlerts(s);
  text('mode', (s.mode || '?').toUpperCase());
  document.getElementById('mode').className = s.mode === 'live' ? 'live' : '';
  text('pairs', (s.pairs || []).join(', ') + ' / ' + (s.timeframe || '?') + ', feed ' +
    (s.feed || '?'));
  text('last-bar', iso(s.last_bar) + ' (' + s.processed_bars + ' bars)');
  const trading = s.equity !== undefined;
  const warmup = s.warmup ? ': warming up (' + s.warmup.have + ' of ' + s.warmup.need + ' bars)'
    : '';
  text('equity', trading ? fmt(s.equity) : 'not trading yet' + warmup);
  text('return', trading ? fmt(s.return_pct) + '% since start' : '');
  text('today', trading ? fmt(s.today_pnl) + ' / ' + fmt(s.today_limit) : '-');
  const used = trading ? Math.min(100, s.limit_used_pct) : 0;
  document.getElementById('limit-used').style.width = used + '%';
  text('limit', trading ? fmt(s.limit_used_pct, 0) + '% of the daily loss limit used' +
    (s.locked ? ': LOCKED, no new entries today' : '') : '');
  text('next', s.next_action || '-');
  text('trades-total', s.trades_total);
  const r = s.retrains;
  text('retrains', r && r.settings ? 'rolling retraining: ' + r.count + ' retrain(s), ' +
    r.swapped + ' swapped' + (r.last ? '; last: ' + (r.last.swapped ? 'swapped in'
    : (r.last.event ? 'discarded (' + r.last.event + ')' : 'kept')) : '') +
    '; trading model ' + String(r.model).split('/').pop() : '');
  fillTable('positions', ['pair', 'quantity', 'entry', 'since', 'last close', 'unrealised %',
    'resting orders'], s.positions.map(p => [p.pair, fmt(p.quantity, 6), fmt(p.entry_price, 4),
    iso(p.entry_time), fmt(p.last_close, 4), fmt(p.unrealised_pct),
    p.orders.length ? p.orders.map(describeOrder).join('; ') : 'none']));
  fillTable('orphan-orders', ['pair', 'order', 'client id', 'created'],
    s.orders_without_position.map(o => [o.pair, describeOrder(o), o.client_order_id || '-',
    o.created_at]), () => 'warning');
  fillTable('trades', ['pair', 'entry', 'exit', 'entry price', 'exit price', 'return %', 'pnl',
    'reason'], s.recent_trades.map(t => [t.pair, iso(t.entry_time), iso(t.exit_time),
    fmt(t.entry_price, 4), fmt(t.exit_price, 4), fmt(t.return * 100), fmt(t.pnl), t.reason]));
  fillTable('events', ['at', 'bar', 'level', 'kind', 'message'], s.events.map(e =>
    [e.at, iso(e.bar_time), e.level, e.kind, e.message]), k => s.events[k].level);
  text('warnings', s.warnings ? s.warnings + ' warning(s) or error(s) among the events' : '');
}
async function getJson(path) {
  const response = await fetch(path, {headers, cache: 'no-store'});
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}
async function refresh() {
  try {
    const s = await getJson('api/status');
    showStatus(s);
    if (s.last_bar !== lastCurveBar) {
      const c = await getJson('api/curves');
      if (c.equity) {
        Plotly.react('equity-chart', c.equity.data, c.equity.layout, {responsive: true});
        Plotly.react('drawdown-chart', c.drawdown.data, c.drawdown.layout, {responsive: true});
      }
      lastCurveBar = s.last_bar;
    }
    text('banner', '');
    text('updated', 'updated ' + new Date().toISOString().slice(11, 19) + ' UTC');
  } catch (err) {
    text('banner', 'cannot refresh: ' + err.message + ' (retrying)');
  }
}
const plotly = document.createElement('script');
plotly.src = 'static/plotly.min.js' + (token ? '?token=' + encodeURIComponent(token) : '');
plotly.onload = () => { refresh(); setInterval(refresh, REFRESH_MS); };
document.head.appendChild(plotly);
"""

_BODY = """<h1>Nexlify <span id="mode">?</span> session: __NAME__</h1>
<p id="banner"></p><p id="alerts" class="alert"></p>
<p class="note"><span id="pairs"></span>; last bar <span id="last-bar"></span>;
<span id="updated">loading</span></p>
<div class="cards">
<div class="card">equity<b id="equity">-</b><span id="return"></span></div>
<div class="card">today's PnL / limit<b id="today">-</b><div class="meter"><div id="limit-used"
 style="width:0%"></div></div><span id="limit"></span></div>
<div class="card">next decision<b id="next">-</b></div>
<div class="card">closed trades<b id="trades-total">-</b></div>
</div>
<p id="retrains" class="note"></p>
<h2>Equity</h2><div id="equity-chart" class="chart"></div>
<h2>Drawdown</h2><div id="drawdown-chart" class="chart"></div>
<h2>Open positions</h2><table id="positions"></table>
<h2>Open orders without a position</h2><table id="orphan-orders"></table>
<h2>Recent trades</h2><table id="trades"></table>
<h2>Events and warnings</h2><p id="warnings" class="note"></p><table id="events"></table>"""


def watch_page_html(session_name: str, refresh_s: float = REFRESH_SECONDS) -> str:
    """The page shell for the session database named ``session_name``."""
    name = html.escape(session_name)
    script = _SCRIPT.replace("__REFRESH_MS__", str(int(refresh_s * 1000)))
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>Nexlify session: {name}</title><style>{_STYLE}</style></head>"
        f"<body>{_BODY.replace('__NAME__', name)}<script>{script}</script></body></html>"
    )
