// The operator console. Talks to its own origin only (the fairness port): GET /stats and
// the fairness routes, plus the leaderboard and progress reads the fairness port serves
// for it. The admin token lives in this tab's sessionStorage and goes out as an
// Authorization header, never in a URL. Every list is a page: nothing here asks for a
// whole board, so it behaves the same with a million players.

import { LineChart, formatValue } from '/console/chart.js';
import { quantile } from '/console/quantile.js';

const TOKEN_KEY = 'liveops.adminToken';
/** The overview's poll period: the issue asks for at most one second. */
const POLL_MS = 1000;
/** Rows of each fairness list: the first page, soonest to expire or newest first. */
const ROWS_MAX = 200;
/** Neighbours each side in a player search. */
const AROUND = 5;
const VIEWS = ['overview', 'boards', 'player', 'fairness'];
/** Audit kinds whose name alone does not say what happened; the others show as named. */
const AUDIT_KINDS = {
  quarantine: 'quarantine (scores held)',
  review: 'review closed',
};

const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, code, message) {
    super(`${status} ${code || ''}: ${message || 'request failed'}`);
    this.status = status;
    this.code = code;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

/** One JSON request to the engine; refusals become ApiError. */
async function api(path, { method = 'GET', body, bearer = token() } = {}) {
  const headers = { Authorization: `Bearer ${bearer}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
    credentials: 'omit',
  });
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    const refused = new ApiError(response.status, error.code, error.message);
    if (response.status === 401 && bearer === token() && token()) signOut(refused.message);
    throw refused;
  }
  return data;
}

// ---------------------------------------------------------------- DOM helpers

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child ?? '')));
  }
  return node;
}

function playerLink(id) {
  return el('a', { className: 'player', href: `#player/${encodeURIComponent(id)}` }, id);
}

/** Fills a table: columns are [title, numeric?]; rows are arrays of cells. */
function fillTable(table, columns, rows, rowClass = () => '') {
  table.replaceChildren(
    el('thead', {}, el('tr', {}, ...columns.map(([t, num]) => el('th', { className: num ? 'num' : '' }, t)))),
    el('tbody', {}, ...rows.map((cells, i) => {
      const tr = el('tr', { className: rowClass(i) });
      cells.forEach((cell, j) => tr.append(el('td', { className: columns[j][1] ? 'num' : '' }, cell)));
      return tr;
    })),
  );
  if (rows.length === 0) {
    table.tBodies[0].append(el('tr', {}, el('td', { colSpan: columns.length, className: 'meta' }, 'none')));
  }
}

function fillList(dl, pairs) {
  dl.replaceChildren(...pairs.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
}

const auditKind = (kind) => AUDIT_KINDS[kind] || kind;
/** A measurement as measured, to six significant digits (no k/M rounding). */
const measured = (v) => (v === null ? '–' : String(Number(v.toPrecision(6))));
const time = (unixS) => (unixS ? new Date(unixS * 1000).toISOString().replace('.000Z', 'Z') : '–');
const timeMs = (ms) => new Date(ms).toISOString().replace('T', ' ').replace('Z', '');

function showError(where, error) {
  where.textContent = error ? String(error.message || error) : '';
}

// ---------------------------------------------------------------- sign-in

function signOut(message = '') {
  sessionStorage.removeItem(TOKEN_KEY);
  stopPolling();
  $('tabs').hidden = true;
  $('sign-out').hidden = true;
  for (const v of VIEWS) $(`view-${v}`).hidden = true;
  $('sign-in').hidden = false;
  $('sign-in-error').textContent = message;
}

async function signIn(candidate) {
  try {
    const stats = await api('/stats', { bearer: candidate });
    sessionStorage.setItem(TOKEN_KEY, candidate);
    $('sign-in-error').textContent = '';
    $('sign-in').hidden = true;
    $('tabs').hidden = false;
    $('sign-out').hidden = false;
    overview.update(stats);
    startPolling();
    route();
  } catch (e) {
    signOut(e.status === 401 ? `Refused by the engine: ${e.message}` : `Cannot reach the engine: ${e.message}`);
  }
}

// ---------------------------------------------------------------- overview

const overview = {
  previous: null,
  charts: null,
  lagChart: null,

  update(stats) {
    const prev = this.previous;
    const seconds = prev ? (stats.atMs - prev.atMs) / 1000 : 0;
    const rate = (now, before) => (prev && seconds > 0 ? Math.max(0, now - before) / seconds : null);
    const sum = (list) => list.reduce((a, c) => a + c.count, 0);
    const refused = sum(stats.eventsRefused);
    const players = stats.shards.reduce((a, s) => a + s.players, 0);
    const ingest = rate(stats.eventsAccepted, prev && prev.eventsAccepted);
    const refusedRate = rate(refused, prev && sum(prev.eventsRefused));
    const walRate = rate(stats.walRecords, prev && prev.walRecords);

    $('health').textContent = stats.ready ? 'ready' : 'not ready';
    $('health').className = `pill ${stats.ready ? 'ok' : 'bad'}`;
    const tiles = [
      ['accepted', 'Events accepted', stats.eventsAccepted],
      ['ingest', 'Ingest, events/s', ingest],
      ['refused', 'Events refused', refused],
      ['flags', 'Flags', sum(stats.flags)],
      ['players', 'Players', players],
      ['wal', 'Log records/s', walRate],
      ['connections', 'Open connections', stats.connectionsOpen],
      ['failed', 'Shards failed', stats.shards.filter((s) => s.failed).length],
    ];
    $('tiles').replaceChildren(...tiles.map(([key, label, value]) =>
      el('div', { className: 'tile' }, el('div', { className: 'label' }, label),
        el('div', { className: 'value', id: `tile-${key}` }, formatValue(value)))));

    fillTable($('refused'), [['reason'], ['total', 1], ['per s', 1]], stats.eventsRefused.map((r) => [
      r.name, r.count, formatValue(rate(r.count, prev && prev.eventsRefused.find((p) => p.name === r.name).count)),
    ]));
    fillTable($('flag-kinds'), [['kind'], ['total', 1]], stats.flags.map((f) => [f.name, f.count]));

    const services = stats.services.map((s) => {
      const before = prev && prev.services.find((p) => p.service === s.service);
      const q = (x) => quantile(x, before && before.latencyBuckets, s.latencyBuckets);
      const ms = (v) => (v === null ? '–' : (v * 1000).toFixed(2));
      return { s, before, p50: q(0.5), p95: q(0.95), p99: q(0.99), ms };
    });
    fillTable($('services'),
      [['service'], ['requests', 1], ['5xx', 1], ['req/s', 1], ['p50 ms', 1], ['p95 ms', 1], ['p99 ms', 1]],
      services.map(({ s, before, p50, p95, p99, ms }) => [
        s.service, s.requests, s.requests5xx, formatValue(rate(s.requests, before && before.requests)),
        ms(p50), ms(p95), ms(p99),
      ]));
    fillTable($('shards'),
      [['shard'], ['health'], ['players', 1], ['idempotency keys', 1], ['queued writes', 1],
        ['queued reads', 1], ['log position (durable)', 1], ['log segments', 1]],
      stats.shards.map((s) => [
        s.shard, s.failed ? 'STORAGE FAILED' : 'serving', s.players, s.idempotencyKeys,
        s.queuedWrites, s.queuedReads, s.walDurableLsn, s.walSegments,
      ]));
    if (stats.mirrors.length === 0) {
      fillTable($('mirrors'), [['no mirror or bus configured (REDIS_URL, DB_URL, BUS_KIND)']], []);
    } else {
      fillTable($('mirrors'),
        [['sink'], ['state'], ['lag, records', 1], ['lag, s', 1], ['errors', 1], ['gaps', 1]],
        stats.mirrors.map((m) => [m.sink, m.state, m.lagRecords, m.lagSeconds.toFixed(1), m.errors, m.gaps]));
    }

    if (!this.charts) {
      this.charts = {
        ingest: new LineChart($('chart-ingest'), ['accepted', 'refused']),
        latency: new LineChart($('chart-latency'), ['p50', 'p99']),
        wal: new LineChart($('chart-wal'), ['records']),
      };
    }
    if (!this.lagChart) {
      const names = stats.mirrors.map((m) => m.sink);
      this.lagChart = new LineChart($('chart-lag'), names.length ? names : ['no mirror configured']);
    }
    const gateway = services.find((x) => x.s.service === 'gateway');
    const toMs = (v) => (v === null ? null : v * 1000);
    this.charts.ingest.push([ingest, refusedRate]);
    this.charts.latency.push([toMs(gateway.p50), toMs(gateway.p99)]);
    this.charts.wal.push([walRate]);
    this.lagChart.push(stats.mirrors.length ? stats.mirrors.map((m) => m.lagRecords) : [null]);
    this.previous = stats;
    $('error').textContent = '';
  },
};

let pollTimer = null;
let polling = false;

function startPolling() {
  stopPolling();
  pollTimer = setInterval(async () => {
    if (polling) return;
    polling = true;
    try {
      overview.update(await api('/stats'));
    } catch (e) {
      $('health').textContent = 'unreachable';
      $('health').className = 'pill bad';
      showError($('error'), e);
    } finally {
      polling = false;
    }
  }, POLL_MS);
}

function stopPolling() {
  if (pollTimer !== null) clearInterval(pollTimer);
  pollTimer = null;
}

// ---------------------------------------------------------------- leaderboards

const boards = {
  ready: false,

  async enter() {
    if (this.ready) return;
    const windows = (overview.previous && overview.previous.windows) || ['weekly'];
    $('board-window').replaceChildren(...windows.map((w) => el('option', { value: w, selected: w === 'weekly' }, w)));
    this.ready = true;
    await this.loadPeriods();
    await this.load();
  },

  async loadPeriods() {
    const window = $('board-window').value;
    const history = await api(`/leaderboard/history?window=${encodeURIComponent(window)}`);
    $('board-period').replaceChildren(
      el('option', { value: '' }, 'live (current period)'),
      ...history.periods.map((p) => el('option', { value: p.period }, `${p.period} (closed ${time(p.closedAt)})`)),
    );
  },

  async load() {
    const window = $('board-window').value;
    const period = $('board-period').value;
    const limit = Number($('board-limit').value);
    const rank = Math.max(1, Number($('board-rank').value) || 1);
    const query = new URLSearchParams({ window, limit: String(limit), offset: String(rank - 1) });
    if (period) query.set('period', period);
    try {
      const page = await api(`/leaderboard?${query}`);
      const shown = page.entries.length ? `ranks ${rank}–${rank + page.entries.length - 1}` : `nothing from rank ${rank}`;
      $('board-meta').textContent = `${page.window} · period ${page.period} · ${page.closed ? 'closed' : 'live'} · ` +
        `${shown} · updated ${time(page.updatedAt)}`;
      fillTable($('board'), [['rank', 1], ['player'], ['score', 1]],
        page.entries.map((e) => [e.rank, playerLink(e.playerId), e.score]));
    } catch (e) {
      $('board-meta').textContent = e.message;
      fillTable($('board'), [['rank', 1], ['player'], ['score', 1]], []);
    }
  },

  async findPlayer(id) {
    const window = $('board-window').value;
    try {
      const r = await api(`/leaderboard/players/${encodeURIComponent(id)}?window=${encodeURIComponent(window)}&around=${AROUND}`);
      $('rank-meta').textContent = `${r.playerId}: rank ${r.rank}, score ${r.score} in ${r.window} ${r.period}`;
      fillTable($('rank'), [['rank', 1], ['player'], ['score', 1]],
        r.neighbours.map((n) => [n.rank, playerLink(n.playerId), n.score]),
        (i) => (r.neighbours[i].playerId === r.playerId ? 'me' : ''));
    } catch (e) {
      $('rank-meta').textContent = e.status === 404 ? `${id} has no score in the ${window} window` : e.message;
      fillTable($('rank'), [['rank', 1], ['player'], ['score', 1]], []);
    }
  },
};

// ---------------------------------------------------------------- player

const player = {
  id: null,

  async load(id) {
    this.id = id;
    $('player-id').value = id;
    showError($('player-error'), null);
    const enc = encodeURIComponent(id);
    const windows = (overview.previous && overview.previous.windows) || ['weekly'];
    const [progress, standing, audit, ...ranks] = await Promise.allSettled([
      api(`/players/${enc}/progress`),
      api(`/fairness/players/${enc}`),
      api(`/fairness/audit?playerId=${enc}&limit=100`),
      ...windows.map((w) => api(`/leaderboard/players/${enc}?window=${w}`)),
    ]);
    if (progress.status === 'rejected' && standing.status === 'rejected') {
      $('player-body').hidden = true;
      showError($('player-error'), progress.reason.status === 404 ? `no player ${id}` : progress.reason);
      return;
    }
    $('player-body').hidden = false;
    if (progress.status === 'fulfilled') {
      const p = progress.value;
      const kills = Object.entries(p.bossKills).map(([b, n]) => `${b} ×${n}`).join(', ') || 'none';
      const drops = p.drops.map((d) => `${d.dropId}${d.claimed ? ' (claimed)' : ''}`).join(', ') || 'none';
      fillList($('player-progress'), [['player', p.playerId], ['season', p.season], ['XP', p.xp],
        ['level', p.level], ['boss kills', kills], ['drops', drops], ['updated', time(p.updatedAt)]]);
    } else {
      fillList($('player-progress'), [['progress', progress.reason.message]]);
    }
    if (standing.status === 'fulfilled') {
      const s = standing.value;
      fillList($('player-standing'), [
        ['blocked', el('span', { className: s.blocked ? 'yes' : '', id: 'player-blocked' }, s.blocked ? 'yes' : 'no')],
        ['until', s.blocked ? time(s.blockedUntil) : '–'], ['reason', s.reason || '–'],
        ['flagged events', s.flags], ['rate-limited events', s.rateLimited]]);
    } else {
      fillList($('player-standing'), [['standing', standing.reason.message]]);
    }
    fillTable($('player-ranks'), [['window'], ['rank', 1], ['score', 1]], windows.map((w, i) => (
      ranks[i].status === 'fulfilled' ? [w, ranks[i].value.rank, ranks[i].value.score] : [w, '–', '–'])));
    const records = audit.status === 'fulfilled' ? audit.value.records : [];
    fillTable($('player-audit'), [['when (UTC)'], ['kind'], ['reason'], ['detail']],
      records.map((r) => [timeMs(r.atMs), auditKind(r.kind), r.reason, JSON.stringify(r.detail)]));
  },

  async block() {
    const seconds = Number($('block-seconds').value);
    const reason = $('block-reason').value.trim();
    const body = { seconds };
    if (reason) body.reason = reason;
    try {
      const r = await api(`/fairness/players/${encodeURIComponent(this.id)}/block`, { method: 'POST', body });
      $('block-result').textContent = `blocked until ${time(r.until)} (${r.reason})`;
    } catch (e) {
      $('block-result').textContent = `block refused: ${e.message}`;
    }
    await this.load(this.id);
  },

  async unblock() {
    try {
      await api(`/fairness/players/${encodeURIComponent(this.id)}/block`, { method: 'DELETE' });
      $('block-result').textContent = 'unblocked';
    } catch (e) {
      $('block-result').textContent = `unblock refused: ${e.message}`;
    }
    await this.load(this.id);
  },
};

// ---------------------------------------------------------------- reviews

/** The review queue, a page at a time by player id, with the operator's two verdicts. */
const reviews = {
  /** The `after` of the page shown: '' for the first. */
  after: '',
  /** The `after` of the following page; null when the page shown is the last. */
  next: null,

  async load() {
    const query = new URLSearchParams({ limit: $('reviews-limit').value });
    if (this.after) query.set('after', this.after);
    const page = await api(`/fairness/reviews?${query}`);
    this.next = page.next;
    $('reviews-next').disabled = page.next === null;
    $('reviews-first').disabled = !this.after;
    $('reviews-meta').textContent = `${page.reviews.length} pending` +
      `${this.after ? ` after ${this.after}` : ''}${page.next === null ? '' : ', more on the next page'}`;
    fillTable($('reviews'),
      [['player'], ['since (UTC)'], ['reason'], ['evidence'], ['held scores'], ['block'], ['verdict']],
      page.reviews.map((r) => [
        playerLink(r.playerId), timeMs(r.sinceMs), r.reason,
        `${r.evidence.detector}: ${r.evidence.measure} ${measured(r.evidence.measured)}` +
          ` (threshold ${measured(r.evidence.threshold)})`,
        r.held.map((h) => `${h.window} ${h.period}: ${h.score}`).join(', ') || 'none',
        r.blocked ? `blocked until ${timeMs(r.blockedUntilMs)} (${r.by})` : 'not blocked',
        this.verdicts(r.playerId),
      ]));
  },

  verdicts(id) {
    const button = (verdict, label) => {
      const b = el('button', { type: 'button', className: `verdict ${verdict}` }, label);
      b.dataset.player = id;
      b.addEventListener('click', () => this.decide(id, verdict));
      return b;
    };
    return el('span', { className: 'verdicts' }, button('confirm', 'Confirm'), button('clear', 'Clear'));
  },

  /** One verdict, after the browser's confirmation; then every fairness list again. */
  async decide(id, verdict) {
    const question = verdict === 'confirm'
      ? `Confirm that ${id} cheated? The held scores are discarded for good and ${id} is blocked for REVIEW_CONFIRM_BLOCK_SEC.`
      : `Clear ${id}? The fairness block is lifted and the held scores go back on the boards.`;
    if (!window.confirm(question)) return;
    try {
      const r = await api(`/fairness/players/${encodeURIComponent(id)}/review/${verdict}`, { method: 'POST' });
      $('reviews-result').textContent = r.verdict === 'confirmed'
        ? `${id}: confirmed, blocked until ${time(r.until)}`
        : `${id}: cleared, ${r.blocked ? 'still blocked by an admin' : 'unblocked'}, scores back on the boards`;
    } catch (e) {
      $('reviews-result').textContent = `${verdict} refused: ${e.message}`;
    }
    await loadFairness();
  },

  page(after) {
    this.after = after;
    loadFairness().catch((e) => showError($('error'), e));
  },
};

// ---------------------------------------------------------------- fairness

async function loadFairness() {
  const [queue, blocked, flags, audit] = await Promise.allSettled([
    reviews.load(), api(`/fairness/blocked?limit=${ROWS_MAX}`), api(`/fairness/flags?limit=${ROWS_MAX}`),
    api(`/fairness/audit?limit=${ROWS_MAX}`),
  ]);
  const rows = (r, key) => (r.status === 'fulfilled' ? r.value[key] : []);
  const list = rows(blocked, 'blocked');
  fillTable($('blocked'), [['player'], ['until (UTC)'], ['reason'], ['by']],
    list.map((b) => [playerLink(b.playerId), time(b.until), b.reason, b.by]));
  fillTable($('flags'), [['when (UTC)'], ['player'], ['reason'], ['detail']],
    rows(flags, 'flags').map((r) => [timeMs(r.atMs), playerLink(r.playerId), r.reason, JSON.stringify(r.detail)]));
  fillTable($('audit'), [['when (UTC)'], ['kind'], ['player'], ['reason'], ['detail']],
    rows(audit, 'records').map((r) => [timeMs(r.atMs), auditKind(r.kind), playerLink(r.playerId), r.reason, JSON.stringify(r.detail)]));
  const failed = [queue, blocked, flags, audit].find((r) => r.status === 'rejected');
  showError($('error'), failed ? failed.reason : null);
}

// ---------------------------------------------------------------- navigation

function route() {
  if (!token()) return;
  const [name, arg] = location.hash.replace(/^#/, '').split('/');
  const view = VIEWS.includes(name) ? name : 'overview';
  for (const v of VIEWS) $(`view-${v}`).hidden = v !== view;
  for (const a of document.querySelectorAll('#tabs a')) a.classList.toggle('active', a.dataset.view === view);
  const failed = (e) => showError($('error'), e);
  if (view === 'boards') boards.enter().catch(failed);
  if (view === 'fairness') loadFairness().catch(failed);
  if (view === 'player' && arg) player.load(decodeURIComponent(arg)).catch(failed);
}

function submit(id, handler) {
  $(id).addEventListener('submit', (event) => {
    event.preventDefault();
    handler();
  });
}

submit('sign-in-form', () => signIn($('token').value.trim()));
submit('board-form', () => boards.load());
submit('rank-form', () => boards.findPlayer($('rank-player').value.trim()));
submit('player-form', () => { location.hash = `#player/${encodeURIComponent($('player-id').value.trim())}`; });
submit('block-form', () => player.block());
$('unblock-button').addEventListener('click', () => player.unblock());
$('sign-out').addEventListener('click', () => signOut());
$('fairness-refresh').addEventListener('click', () => loadFairness());
$('reviews-first').addEventListener('click', () => reviews.page(''));
$('reviews-next').addEventListener('click', () => reviews.page(reviews.next));
$('reviews-limit').addEventListener('change', () => reviews.page(''));
$('board-window').addEventListener('change', () => boards.loadPeriods().then(() => boards.load()));
$('board-period').addEventListener('change', () => boards.load());
const step = (sign) => () => {
  const limit = Number($('board-limit').value);
  $('board-rank').value = String(Math.max(1, (Number($('board-rank').value) || 1) + sign * limit));
  boards.load();
};
$('board-prev').addEventListener('click', step(-1));
$('board-next').addEventListener('click', step(1));
window.addEventListener('hashchange', route);

if (token()) signIn(token()); else signOut();
