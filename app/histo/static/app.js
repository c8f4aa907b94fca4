'use strict';
// histo web UI: no framework, no CDN, no inline script or style (the page's CSP forbids them).
// The token lives in sessionStorage only and is sent in the Authorization header (or as the first
// WebSocket message), never in a URL, the page source or a log.
(() => {
  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  };
  const TOKEN_KEY = 'histo.token';
  const state = {
    token: '', claims: null, current: null, ws: null, wsRetry: 0, wsTimer: null,
    urls: {}, cluster: null, clusterAt: 0, life: {}, filter: 'all', counts: { all: 0, warning: 0, critical: 0 },
  };

  // -- small helpers ---------------------------------------------------------------------------
  const setStatus = (node, text, cls) => { node.textContent = text; node.className = 'status ' + (cls || ''); };
  const fmtDuration = (s) => {
    if (s === null || s === undefined || !isFinite(s)) return '?';
    s = Math.max(0, Math.round(s));
    if (s < 90) return s + 's';
    if (s < 5400) return Math.floor(s / 60) + 'm ' + String(s % 60).padStart(2, '0') + 's';
    if (s < 172800) return Math.floor(s / 3600) + 'h ' + String(Math.floor((s % 3600) / 60)).padStart(2, '0') + 'm';
    return Math.floor(s / 86400) + 'd';
  };
  const fmtMs = (sec) => (sec * 1000 < 10 ? (sec * 1000).toFixed(1) : (sec * 1000).toFixed(0)) + ' ms';
  const signedIn = () => !!state.token && !!state.claims;
  const hasRole = (...roles) => signedIn() && roles.includes(state.claims.role);

  async function api(path, opts = {}) {
    const resp = await fetch(path, {
      ...opts, cache: 'no-store', credentials: 'omit',
      headers: { ...(opts.headers || {}), Authorization: 'Bearer ' + state.token },
    });
    if (!resp.ok) {
      let msg = resp.status + ' ' + resp.statusText;
      try { const j = await resp.json(); msg = j.message || j.error || msg; } catch (_) { /* not JSON */ }
      const err = new Error(msg); err.status = resp.status;
      if (resp.status === 401) tokenRefused(msg);
      throw err;
    }
    return resp;
  }

  function decodeClaims(token) {
    const parts = token.split('.');
    if (parts.length !== 3) return null;
    try {
      const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
      const c = JSON.parse(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)));
      return c && typeof c === 'object' && typeof c.exp === 'number' ? c : null;
    } catch (_) { return null; }
  }

  // -- session (token) ---------------------------------------------------------------------------
  function renderWho() {
    $('sign-in').classList.toggle('hidden', signedIn());
    $('sign-out').classList.toggle('hidden', !signedIn());
    const who = $('who');
    if (!signedIn()) { who.replaceChildren(el('span', '', 'not signed in')); return; }
    const c = state.claims;
    const left = c.exp - Date.now() / 1000;
    const exp = el('span', left < 60 ? 'exp bad' : 'exp', left > 0 ? 'expires in ' + fmtDuration(left) : 'expired');
    who.replaceChildren(el('span', 'sub', c.sub), el('span', 'role role-' + c.role, c.role), exp);
  }

  function applyRole() {
    const canUpload = hasRole('uploader', 'admin');
    $('upload').disabled = !canUpload;
    $('upload').title = canUpload ? '' : 'an uploader or admin token is needed';
    if (!canUpload) {
      $('jobs-count').textContent = '';
      $('jobs').querySelector('tbody').replaceChildren(el('tr', 'empty'));
      $('jobs').querySelector('tbody').firstChild.append(Object.assign(el('td', '', signedIn()
        ? 'an uploader or admin token lists jobs' : 'no jobs yet'), { colSpan: 5 }));
    }
    if (!hasRole('viewer', 'admin')) {
      renderIncidents([]);
      $('leader-pill').className = 'pill hidden';
      $('cluster-summary').replaceChildren();
      $('cluster').replaceChildren(el('p', 'hint', signedIn()
        ? `${/^[aeiou]/.test(state.claims.role) ? 'An' : 'A'} ${state.claims.role} token does not show the cluster: use a viewer or admin token.`
        : 'A viewer or admin token shows the masters, the workers and their certificates.'));
    }
  }

  function useToken(raw) {
    const token = (raw || '').trim().replace(/^Bearer\s+/i, '');
    const c = decodeClaims(token);
    if (!c) { setStatus($('token-status'), 'That does not look like a token (header.claims.signature).', 'bad'); return; }
    if (c.exp * 1000 <= Date.now()) { setStatus($('token-status'), 'That token has expired: issue a new one.', 'bad'); return; }
    state.token = token; state.claims = c;
    sessionStorage.setItem(TOKEN_KEY, token);
    $('token').value = '';
    setStatus($('token-status'), `Signed in as ${c.sub} (${c.role}) for this tab.`, 'ok');
    renderWho(); applyRole();
    state.wsRetry = 0; connectEvents();
    refreshJobs(); refreshCluster(); loadSecops();
  }

  function forgetToken(message, cls) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = ''; state.claims = null;
    if (state.ws) { state.ws.onclose = null; state.ws.close(); state.ws = null; }
    clearTimeout(state.wsTimer);
    setWs('offline', '');
    renderWho(); applyRole();
    setStatus($('token-status'), message || 'Forgotten.', cls || '');
  }

  function tokenRefused(msg) {
    setStatus($('token-status'), 'The server refused the token: ' + msg, 'bad');
  }

  // -- sign-in: authorization code + PKCE (S256) with state and nonce, at OpenBao's page ---------------
  // The verifier, state and nonce stay in this tab's sessionStorage for the round trip; the state is
  // checked here, the nonce by the master (in the ID token it redeems the code for).
  const PENDING_KEY = 'histo.signin';
  const b64url = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)))
    .replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  const randomText = (n) => b64url(crypto.getRandomValues(new Uint8Array(n)));
  const redirectUri = () => location.origin + '/';

  async function signIn() {
    setStatus($('token-status'), 'Opening the sign-in page…', '');
    try {
      const resp = await fetch('/api/v1/signin');
      const conf = await resp.json();
      if (!resp.ok) throw new Error(conf.message || resp.status);
      const pending = { verifier: randomText(48), state: randomText(24), nonce: randomText(24) };
      const challenge = b64url(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(pending.verifier)));
      sessionStorage.setItem(PENDING_KEY, JSON.stringify(pending));
      const q = new URLSearchParams({ client_id: conf.client_id, response_type: 'code', scope: conf.scope,
        redirect_uri: redirectUri(), state: pending.state, nonce: pending.nonce, code_challenge: challenge,
        code_challenge_method: 'S256' });
      location.assign(conf.authorization_endpoint + '?' + q.toString());
    } catch (e) { setStatus($('token-status'), 'Sign-in is unavailable: ' + e.message, 'bad'); }
  }

  async function finishSignIn(params) {
    history.replaceState(null, '', '/');  // the code leaves the address bar (and the history) at once
    const pending = JSON.parse(sessionStorage.getItem(PENDING_KEY) || 'null');
    sessionStorage.removeItem(PENDING_KEY);
    if (!pending || params.get('state') !== pending.state) {
      setStatus($('token-status'), 'Sign-in refused: the answer is not for a sign-in started here (state mismatch).', 'bad');
      return;
    }
    if (params.get('error')) {
      setStatus($('token-status'), 'OpenBao refused: ' + (params.get('error_description') || params.get('error')), 'bad');
      return;
    }
    const body = new URLSearchParams({ grant_type: 'authorization_code', code: params.get('code') || '',
      code_verifier: pending.verifier, redirect_uri: redirectUri(), nonce: pending.nonce });
    const resp = await fetch('/api/v1/oauth/token', { method: 'POST', body });
    const answer = await resp.json().catch(() => ({}));
    if (!resp.ok) { setStatus($('token-status'), 'Sign-in refused: ' + (answer.message || resp.status), 'bad'); return; }
    useToken(answer.access_token);
  }

  $('sign-in').addEventListener('click', signIn);
  async function signOut() {  // the master revokes this token on every master, then the tab forgets it
    try { await api('/api/v1/signout', { method: 'POST' }); } catch (e) { /* forgotten here all the same */ }
    forgetToken('Signed out: the token is revoked.', '');
  }

  $('sign-out').addEventListener('click', signOut);
  $('token-form').addEventListener('submit', (e) => { e.preventDefault(); useToken($('token').value); });
  $('forget-token').addEventListener('click', () => forgetToken());

  // -- upload with progress ----------------------------------------------------------------------
  $('image').addEventListener('change', () => {
    const f = $('image').files[0];
    $('image-name').textContent = f ? `${f.name} · ${(f.size / 1024).toFixed(0)} KiB` : 'Choose a JPEG or PNG…';
    $('image-name').classList.toggle('chosen', !!f);
  });

  function setUrl(slot, img, url) {
    if (state.urls[slot]) URL.revokeObjectURL(state.urls[slot]);
    state.urls[slot] = url;
    if (url) img.src = url; else img.removeAttribute('src');
  }

  $('upload-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const file = $('image').files[0];
    if (!signedIn()) { setStatus($('upload-status'), 'Use a token first.', 'bad'); return; }
    if (!file) { setStatus($('upload-status'), 'Choose a JPEG or PNG first.', 'bad'); return; }
    const form = new FormData();
    form.append('image', file);
    form.append('mode', $('mode').value);
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/api/v1/jobs');
    xhr.setRequestHeader('Authorization', 'Bearer ' + state.token);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) $('upload-progress').value = 100 * e.loaded / e.total; };
    xhr.onload = () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
      $('upload').disabled = !hasRole('uploader', 'admin');
      if (xhr.status === 202 && body.id) {
        $('upload-progress').value = 100;
        setStatus($('upload-status'), `Accepted as job ${body.id}.`, 'ok');
        watchJob(body.id, file);
        refreshJobs();
      } else {
        const retry = xhr.getResponseHeader('Retry-After');
        setStatus($('upload-status'), `${xhr.status}: ${body.message || body.error || 'refused'}` +
          (retry ? ` (retry in ${retry}s)` : ''), 'bad');
      }
    };
    xhr.onerror = () => { $('upload').disabled = false; setStatus($('upload-status'), 'Network error.', 'bad'); };
    $('upload-progress').value = 0;
    $('upload').disabled = true;
    setStatus($('upload-status'), 'Uploading…', '');
    xhr.send(form);
  });

  // -- a job: progress, then result and plot -------------------------------------------------------
  function setJobState(job) {
    const p = $('job-progress');
    p.value = 100 * Math.min(1, Math.max(0, job.progress || 0));
    p.className = job.state === 'done' ? 'done' : job.state === 'failed' ? 'failed' : '';
    $('job-state').textContent = job.state;
    $('job-state').className = 'state state-' + job.state;
    $('job-reason').textContent = job.state === 'failed' && job.reason ? job.reason : '';
  }

  async function watchJob(id, originalFile) {
    state.current = id;
    $('result-job').textContent = id;
    setUrl('result', $('result-img'), null);
    setUrl('hist', $('hist-img'), null);
    setUrl('original', $('original-img'), originalFile ? URL.createObjectURL(originalFile) : null);
    $('fig-original').classList.toggle('hidden', !originalFile);
    $('fig-original').parentElement.classList.toggle('with-original', !!originalFile);
    $('timings').replaceChildren();
    setJobState({ state: 'queued', progress: 0 });
    highlightJob();
    for (let i = 0; i < 1200 && state.current === id; i++) {
      let job;
      try { job = await (await api(`/api/v1/jobs/${encodeURIComponent(id)}`)).json(); } catch (e) {
        $('job-state').textContent = e.message; $('job-state').className = 'state state-failed'; return;
      }
      if (state.current !== id) return;
      setJobState(job);
      if (job.state === 'done') { await showResult(job); return; }
      if (job.state === 'failed') { refreshJobs(); return; }
      await new Promise((r) => setTimeout(r, i < 40 ? 250 : 1000));
    }
  }

  async function blobUrl(path) { return URL.createObjectURL(await (await api(path)).blob()); }

  async function showResult(job) {
    const id = job.id;
    try {
      const [result, hist] = await Promise.all([blobUrl(`/api/v1/jobs/${encodeURIComponent(id)}/result`),
        blobUrl(`/api/v1/jobs/${encodeURIComponent(id)}/histogram.png`)]);
      if (state.current !== id) { URL.revokeObjectURL(result); URL.revokeObjectURL(hist); return; }
      setUrl('result', $('result-img'), result);
      setUrl('hist', $('hist-img'), hist);
      const receipt = await blobUrl(`/api/v1/jobs/${encodeURIComponent(id)}/receipt`);
      const link = $('receipt-link');
      if (link.href.startsWith('blob:')) URL.revokeObjectURL(link.href);
      link.href = receipt; link.download = `${id}.receipt.jws`; link.classList.remove('hidden');
    } catch (e) { $('job-reason').textContent = 'result: ' + e.message; }
    const t = job.timings || {};
    $('timings').replaceChildren(...Object.entries(t).map(([k, v]) => {
      const li = el('li', k === 'total' ? 'total' : '');
      li.append(k + ' ', el('b', '', fmtMs(Number(v) || 0)));
      return li;
    }), ...(job.width ? [el('li', '', `${job.width}×${job.height} ${job.format || ''} · ${job.mode} · ${job.tiles || '?'} strips`)] : []));
    refreshJobs();
  }

  function highlightJob() {
    for (const tr of $('jobs').querySelectorAll('tbody tr')) tr.classList.toggle('current', tr.dataset.id === state.current);
  }

  async function refreshJobs() {
    if (!hasRole('uploader', 'admin')) return;
    let jobs;
    try { jobs = (await (await api('/api/v1/jobs')).json()).jobs || []; } catch (_) { return; }
    $('jobs-count').textContent = jobs.length ? String(jobs.length) : '';
    const tbody = $('jobs').querySelector('tbody');
    if (!jobs.length) { tbody.replaceChildren(el('tr', 'empty')); tbody.firstChild.append(Object.assign(el('td', '', 'no jobs yet'), { colSpan: 5 })); return; }
    tbody.replaceChildren(...jobs.slice(0, 20).map((j) => {
      const tr = el('tr', 'clickable');
      tr.dataset.id = j.id;
      const total = j.timings && j.timings.total ? fmtMs(j.timings.total) : '';
      tr.title = `${j.id} · ${j.format || ''}` + (j.reason ? ` · ${j.reason}` : '');
      tr.append(el('td', 'mono', j.id.slice(0, 8) + '…'), el('td', 'state-' + j.state, j.state), el('td', '', j.mode),
        el('td', '', j.width ? `${j.width}×${j.height}` : ''), el('td', 'num', total));
      tr.addEventListener('click', () => watchJob(j.id, null));
      return tr;
    }));
    highlightJob();
  }

  // -- cluster view --------------------------------------------------------------------------------
  function certLeft(n) { return n.cert_not_after ? (Date.parse(n.cert_not_after) - Date.now()) / 1000 : null; }

  function lifeFraction(key, n) {
    // The API gives the expiry only; the lifetime is estimated from the first sight of each certificate
    // (renewal happens at about 2/3 of its life, so "less than a third left" means renewal is due).
    const left = certLeft(n);
    if (left === null) return null;
    const seen = state.life[key];
    if (!seen || seen.notAfter !== n.cert_not_after) state.life[key] = { notAfter: n.cert_not_after, life: Math.max(left, 1) };
    return Math.max(0, Math.min(1, left / state.life[key].life));
  }

  function nodeCard(n, kind, leader) {
    const card = el('div', 'node' + (leader ? ' leader' : ''));
    const top = el('div', 'top');
    top.append(el('span', 'kind', kind));
    if (kind === 'master') top.append(el('span', 'tag' + (leader ? ' leader' : ''), leader ? 'leader' : 'standby'));
    const cert = el('div', 'cert');
    const left = el('span', 'left');
    cert.append(el('span', '', 'cert'), left);
    const life = el('div', 'life');
    const bar = el('span');
    life.append(bar);
    card.dataset.key = kind + ':' + n.name;
    card.append(top, el('b', '', n.name), cert, life, el('div', 'id', n.spiffe_id || ''),
      el('div', 'id', n.endpoint || ''));
    card.update = () => {
      const secs = certLeft(n);
      const frac = lifeFraction(card.dataset.key, n);
      const cls = secs === null ? '' : secs <= 0 ? 'bad' : frac < 1 / 6 ? 'bad' : frac < 1 / 3 ? 'warn' : 'ok';
      left.textContent = secs === null ? 'unknown' : secs <= 0 ? 'EXPIRED' : 'expires in ' + fmtDuration(secs);
      cert.className = 'cert ' + cls; life.className = 'life ' + cls;
      bar.style.width = (frac === null ? 0 : 100 * frac).toFixed(1) + '%';  // CSSOM: allowed by the CSP
      left.title = n.cert_not_after || '';
    };
    card.update();
    return card;
  }

  function renderCluster(c) {
    const masters = c.masters || [], workers = c.workers || [];
    const standby = masters.filter((m) => !m.leader).map((m) => m.name);
    const soonest = [...masters, ...workers].map(certLeft).filter((s) => s !== null).sort((a, b) => a - b)[0];
    const pill = (text, cls) => el('span', 'pill ' + (cls || ''), text);
    $('cluster-summary').replaceChildren(
      pill('leader ' + (c.leader || 'none'), c.leader ? 'ok' : 'bad'),
      pill(standby.length ? 'standby ' + standby.join(', ') : 'no standby', standby.length ? '' : 'warn'),
      pill(workers.length + ' worker' + (workers.length === 1 ? '' : 's'), workers.length ? 'ok' : 'bad'),
      ...(soonest !== undefined ? [pill('next expiry ' + fmtDuration(soonest), soonest < 60 ? 'warn' : '')] : []),
      ...(c.self && c.self.certificate ? [pill(`${c.self.name}: ${c.self.certificate.rotations || 0} rotations`)] : []));
    $('leader-pill').textContent = 'leader ' + (c.leader || 'none');
    $('leader-pill').className = 'pill ' + (c.leader ? 'ok' : 'bad');
    const cards = [...masters.map((m) => nodeCard(m, 'master', m.leader)), ...workers.map((w) => nodeCard(w, 'worker', false))];
    $('cluster').replaceChildren(...(cards.length ? cards : [el('p', 'hint', 'no nodes registered')]));
  }

  // -- incidents: hosts SecOps quarantined (contained, partly), recent releases, and what it detected
  //    and did not contain (open: no decision yet; alerted: an alert rule, a dry run, a guard rail) ----
  const INCIDENT_LOOK = { released: ['released', 'ok'], open: ['alerted', 'warn'], alerted: ['alerted', 'warn'] };
  function incidentItem(i) {
    const [cls, pill] = INCIDENT_LOOK[i.state] || ['contained', 'bad'];
    const li = el('li', 'incident ' + cls);
    const head = el('div', 'top');
    head.append(el('b', '', i.host), el('span', 'pill ' + pill, i.state),
      el('span', 'dim', (i.rule || '') + (i.incident ? ' · ' + i.incident : '')));
    const when = i.released ? 'released ' + new Date(i.released * 1000).toLocaleTimeString()
      : 'since ' + new Date((i.since || 0) * 1000).toLocaleTimeString();
    li.append(head, el('div', 'dim', when));
    if (i.decision) li.append(el('div', 'actions', i.decision));
    const actions = (i.actions || []).map((a) => (a.ok ? '✓ ' : '✗ ') + a.name).join('  ');
    if (actions) li.append(el('div', 'actions', actions));
    for (const e of (i.evidence || []).slice(0, 3)) {
      li.append(el('div', 'evidence mono', [e.layer, e.kind, e.path || e.reason || e.target || e.why || '']
        .filter(Boolean).join(' · ')));
    }
    if (i.release) li.append(el('code', 'release', i.release));
    return li;
  }

  function renderIncidents(list) {
    const items = (list || []).map(incidentItem);
    $('incidents').replaceChildren(...items);
    $('incidents-empty').classList.toggle('hidden', items.length > 0);
    const held = (list || []).filter((i) => !['released', 'open', 'alerted'].includes(i.state)).length;
    const alerted = (list || []).filter((i) => ['open', 'alerted'].includes(i.state)).length;
    $('incidents-count').textContent = [held ? held + ' contained' : '', alerted ? alerted + ' alerted' : '']
      .filter(Boolean).join(', ');
  }

  async function refreshCluster() {
    if (!hasRole('viewer', 'admin')) return;
    try {
      state.cluster = await (await api('/api/v1/cluster')).json();
      state.clusterAt = Date.now();
      renderCluster(state.cluster);
      renderIncidents(state.cluster.incidents);
    } catch (e) { $('cluster-summary').replaceChildren(el('span', 'pill bad', e.message)); }
  }

  async function refreshReady() {
    try {
      const r = await fetch('/readyz', { cache: 'no-store', credentials: 'omit' });
      const j = await r.json();
      const cls = j.status === 'ok' ? 'ok' : j.status === 'degraded' ? 'warn' : 'bad';
      $('ready').textContent = j.status === 'ok' ? 'ready' : j.status || ('HTTP ' + r.status);
      $('ready').className = 'pill ' + cls;
      $('ready').title = (j.reasons && j.reasons.length) ? j.reasons.join('\n') : 'GET /readyz';
    } catch (_) { $('ready').textContent = 'unreachable'; $('ready').className = 'pill bad'; }
  }

  // a one-second tick: countdowns move between polls
  setInterval(() => {
    renderWho();
    if (state.claims && state.claims.exp * 1000 <= Date.now()) forgetToken('The token expired: paste a new one.', 'warn');
    for (const card of $('cluster').querySelectorAll('.node')) if (card.update) card.update();
    if (state.clusterAt) $('cluster-age').textContent = 'updated ' + fmtDuration((Date.now() - state.clusterAt) / 1000) + ' ago';
  }, 1000);
  setInterval(refreshCluster, 3000);
  setInterval(refreshJobs, 5000);
  setInterval(refreshReady, 5000);

  // -- SecOps events over an authenticated WebSocket ------------------------------------------------
  // Refusals (warning, critical) and information (certificate rotations, leader changes, drills held)
  // are kept apart, each bounded: information is grouped by kind and can never push a refusal off the
  // list or the per-identity table.
  function setWs(text, cls) { $('ws-state').textContent = text; $('ws-state').className = 'pill ' + cls; }

  const SEV_RANK = { info: 0, warning: 1, critical: 2 };
  const MAX_REFUSALS = 2000, MAX_LISTED = 300, MAX_INFO_PER_KIND = 20, MAX_INFO_KINDS = 40;
  // The masters' own events name no layer: the kind says which control refused.
  const KIND_LAYER = {
    auth_failure: 'edge', auth_throttled: 'edge', forbidden: 'edge', rate_limited: 'edge', token_revoked: 'edge',
    mtls_rejected: 'mtls', result_refused: 'mtls', replica_refused: 'mtls', relay_refused: 'mtls', cert_rotated: 'mtls',
    zk_auth_failure: 'zookeeper', vault_unavailable: 'vault', vault_recovered: 'vault',
    secops_push_refused: 'secops', drill: 'secops',
  };
  const LAYER_COL = { vault: 'vault', zookeeper: 'zookeeper', firewall: 'firewall', ssh: 'ssh', mtls: 'mtls', edge: 'mtls', secops: 'secops' };
  const COLS = ['vault', 'zookeeper', 'firewall', 'ssh', 'mtls', 'secops'];
  const sec = { layer: 'all', windowMin: 15, refusals: [], info: new Map(), seen: new Set(), infoCount: 0 };

  const layerOf = (e) => LAYER_COL[e.layer || KIND_LAYER[e.kind]] || 'secops';
  function passes(sev) {
    return state.filter === 'all' || (SEV_RANK[sev] || 0) >= SEV_RANK[state.filter];
  }
  const layerPasses = (layer) => sec.layer === 'all' || sec.layer === layer;
  // Who was refused: the collector names the inventory host and its SPIFFE id; a master names the
  // token subject, the peer or the client address it refused.
  function identityOf(e) {
    if (e.source === 'collector') return { id: e.host || 'outside', spiffe: e.spiffe || '', where: e.where || '' };
    const id = e.who || e.worker || e.peer || e.where || e.collector || e.service || 'unknown';
    return { id: String(id), spiffe: '', where: e.service || '' };
  }
  // One event once, whether it came live, in the stream's replay or from GET /api/v1/secops/events.
  function firstSight(e) {
    const key = e.record_seq !== undefined ? 'rec:' + (e.record || '') + ':' + e.record_seq : 'bus:' + e.seq + ':' + e.ts;
    if (sec.seen.has(key)) return false;
    if (sec.seen.size > 20000) sec.seen.clear();
    sec.seen.add(key);
    return true;
  }

  function eventItem(e, sev, when) {
    const li = el('li', 'sev-' + sev + ' fresh');
    li.dataset.sev = sev;
    li.dataset.layer = layerOf(e);
    const t = el('time', '', when.toLocaleTimeString([], { hour12: false }));
    t.dateTime = when.toISOString();
    const detail = el('span', 'detail');
    for (const [key, v] of Object.entries(e)) {
      if (['ts', 'kind', 'severity', 'audience', 'seq', 'source', 'record', 'received', 'record_ts'].includes(key)
          || v === null || v === '') continue;
      const s = el('span');
      s.append(el('i', '', key + '='), typeof v === 'object' ? JSON.stringify(v) : String(v));
      detail.append(s);
    }
    li.append(t, el('span', 'dot'), el('span', 'kind', e.kind), detail);
    li.title = sev + ' · ' + layerOf(e) + ' · ' + when.toISOString();
    li.classList.toggle('filtered', !passes(sev) || !layerPasses(li.dataset.layer));
    return li;
  }

  function addEvent(e) {
    if (!firstSight(e)) return;
    const sev = SEV_RANK[e.severity] !== undefined ? e.severity : 'info';
    const when = new Date((Number(e.ts) || Date.now() / 1000) * 1000);
    state.counts.all++;
    if (SEV_RANK[sev] >= 1) state.counts.warning++;
    if (sev === 'critical') state.counts.critical++;
    for (const k of ['all', 'warning', 'critical']) $('n-' + k).textContent = String(state.counts[k]);
    if (sev === 'info') { addInfo(e, when); return; }
    $('events').prepend(eventItem(e, sev, when));
    while ($('events').children.length > MAX_LISTED) $('events').lastChild.remove();
    sec.refusals.push({ at: when.getTime(), e, sev, layer: layerOf(e), who: identityOf(e) });
    if (sec.refusals.length > MAX_REFUSALS) sec.refusals.splice(0, sec.refusals.length - MAX_REFUSALS);
    renderSecview();
  }

  function addInfo(e, when) {
    sec.infoCount++;
    $('n-info').textContent = String(sec.infoCount);
    let g = sec.info.get(e.kind);
    if (!g) {
      if (sec.info.size >= MAX_INFO_KINDS) sec.info.delete(sec.info.keys().next().value);
      g = { count: 0, items: [] };
      sec.info.set(e.kind, g);
    }
    g.count++;
    g.items.unshift(eventItem(e, 'info', when));
    g.items.length = Math.min(g.items.length, MAX_INFO_PER_KIND);
    renderInfo();
  }

  function renderInfo() {
    $('info-groups').replaceChildren(...[...sec.info.entries()].map(([kind, g]) => {
      const d = el('details', 'info-group');
      const last = g.items[0] ? g.items[0].querySelector('time').textContent : '';
      const head = el('summary');
      head.append(el('span', 'kind', kind), el('b', '', '×' + g.count), el('span', 'dim', 'last ' + last));
      const list = el('ol', 'events');
      list.append(...g.items);
      d.append(head, list);
      d.dataset.kind = kind;
      return d;
    }));
  }

  function renderSecview() {
    const since = Date.now() - sec.windowMin * 60000;
    const recent = sec.refusals.filter((r) => r.at >= since && passes(r.sev) && layerPasses(r.layer));
    // per identity: counts by layer, the last refusal and where
    const rows = new Map();
    for (const r of recent) {
      let row = rows.get(r.who.id);
      if (!row) { row = { id: r.who.id, spiffe: '', counts: {}, all: 0, last: null, where: new Set() }; rows.set(r.who.id, row); }
      row.counts[r.layer] = (row.counts[r.layer] || 0) + 1;
      row.all++;
      if (r.who.spiffe) row.spiffe = r.who.spiffe;
      if (r.who.where) row.where.add(r.who.where);
      if (!row.last || r.at >= row.last.at) row.last = r;
    }
    const tbody = $('identities').querySelector('tbody');
    const sorted = [...rows.values()].sort((a, b) => b.last.at - a.last.at);
    if (!sorted.length) {
      tbody.replaceChildren(el('tr', 'empty'));
      tbody.firstChild.append(Object.assign(el('td', '', 'no refusal in this window'), { colSpan: 10 }));
    } else {
      tbody.replaceChildren(...sorted.slice(0, 100).map((row) => {
        const tr = el('tr', 'sev-' + row.last.sev);
        tr.dataset.identity = row.id;
        const who = el('td', 'who');
        who.append(el('b', '', row.id), el('div', 'id', row.spiffe));
        const e = row.last.e;
        const last = el('td', 'last');
        last.append(el('span', 'kind', e.kind), ' ', el('span', 'dim', [e.what, e.reason || e.why].filter(Boolean).join(' · ')),
          ' ', el('time', 'dim', fmtDuration((Date.now() - row.last.at) / 1000) + ' ago'));
        tr.append(who, ...COLS.map((c) => el('td', 'num' + (row.counts[c] ? ' hit' : ''), row.counts[c] || '')),
          el('td', 'num', row.all), last, el('td', 'where', [...row.where].join(', ')));
        return tr;
      }));
    }
    $('secview-window-label').textContent = `refused identities, last ${sec.windowMin} min`;
    renderTimeline(recent, since);
  }

  function renderTimeline(recent, since) {
    const buckets = Array.from({ length: sec.windowMin }, () => ({}));
    for (const r of recent) {
      const i = Math.min(sec.windowMin - 1, Math.floor((r.at - since) / 60000));
      if (i >= 0) buckets[i][r.layer] = (buckets[i][r.layer] || 0) + 1;
    }
    const peak = Math.max(1, ...buckets.map((b) => Object.values(b).reduce((x, y) => x + y, 0)));
    $('timeline').replaceChildren(...buckets.map((b, i) => {
      const col = el('div', 'col');
      const total = Object.values(b).reduce((x, y) => x + y, 0);
      col.title = `${sec.windowMin - i} min ago: ${total} refusal${total === 1 ? '' : 's'}` +
        Object.entries(b).map(([k, v]) => ` · ${k} ${v}`).join('');
      for (const c of COLS) {
        if (!b[c]) continue;
        const seg = el('span', 'seg layer-' + c);
        seg.style.height = (100 * b[c] / peak).toFixed(1) + '%';  // CSSOM: allowed by the CSP
        col.append(seg);
      }
      return col;
    }));
  }

  function applyFilters() {
    for (const li of document.querySelectorAll('#events li, #info-groups li')) {
      li.classList.toggle('filtered', !passes(li.dataset.sev) || !layerPasses(li.dataset.layer));
    }
    renderSecview();
  }

  for (const chip of document.querySelectorAll('.chip[data-filter]')) {
    chip.addEventListener('click', () => {
      state.filter = chip.dataset.filter;
      for (const c of document.querySelectorAll('.chip[data-filter]')) c.classList.toggle('active', c === chip);
      $('info-box').classList.toggle('hidden', state.filter !== 'all');
      applyFilters();
    });
  }
  for (const chip of document.querySelectorAll('.chip[data-layer]')) {
    chip.addEventListener('click', () => {
      sec.layer = chip.dataset.layer;
      for (const c of document.querySelectorAll('.chip[data-layer]')) c.classList.toggle('active', c === chip);
      applyFilters();
    });
  }
  $('secview-window').addEventListener('change', () => { sec.windowMin = Number($('secview-window').value) || 15; renderSecview(); });
  $('clear-events').addEventListener('click', () => {
    $('events').replaceChildren();
    state.counts = { all: 0, warning: 0, critical: 0 };
    for (const k of ['all', 'warning', 'critical']) $('n-' + k).textContent = '0';
    sec.refusals = []; sec.info.clear(); sec.infoCount = 0; $('n-info').textContent = '0';
    renderInfo(); renderSecview();
  });

  // The record's refusals the master already holds (its bounded buffer), then the live stream.
  async function loadSecops() {
    if (!hasRole('viewer', 'admin')) return;
    try {
      const page = await (await api('/api/v1/secops/events?limit=500')).json();
      for (const e of page.events || []) addEvent({ ...e, source: 'collector' });
    } catch (_) { /* the stream still brings what comes next */ }
  }
  setInterval(renderSecview, 15000);  // the window slides

  function connectEvents() {
    clearTimeout(state.wsTimer);
    if (state.ws) { state.ws.onclose = null; state.ws.close(); state.ws = null; }
    if (!signedIn()) return;
    const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/api/v1/events');
    state.ws = ws;
    setWs('connecting', 'warn');
    // Browsers cannot set headers on a WebSocket: the token is the first message, never the URL.
    ws.onopen = () => ws.send(JSON.stringify({ type: 'auth', token: state.token }));
    ws.onmessage = (m) => {
      let msg;
      try { msg = JSON.parse(m.data); } catch (_) { return; }
      if (msg.type === 'ready') {
        state.wsRetry = 0;
        setWs('live', 'live');
        $('ws-state').title = 'streaming as ' + (msg.sub || '') + ' (' + msg.role + ')';
        return;
      }
      if (msg.type !== 'event' || !msg.event) return;
      const e = msg.event;
      if (e.kind === 'job_progress') {
        if (e.job === state.current && typeof e.progress === 'number') {
          $('job-progress').value = Math.max($('job-progress').value, 100 * e.progress);
        }
        return;
      }
      if (e.kind === 'leader_changed' || e.kind === 'worker_joined' || e.kind === 'worker_left') refreshCluster();
      addEvent(e);
    };
    ws.onclose = (ev) => {
      if (state.ws !== ws) return;
      state.ws = null;
      if (ev.code === 4401) { setWs('refused', 'bad'); tokenRefused('the event stream did not accept it'); return; }
      if (!signedIn()) { setWs('offline', ''); return; }
      const delay = Math.min(15000, 1000 * 2 ** state.wsRetry++);  // back off, then keep trying
      setWs('reconnecting in ' + Math.round(delay / 1000) + 's', 'warn');
      state.wsTimer = setTimeout(connectEvents, delay);
    };
  }

  // -- start ------------------------------------------------------------------------------------------
  refreshReady();
  applyRole();
  const params = new URLSearchParams(location.search);
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (params.has('state')) finishSignIn(params);
  else if (saved) useToken(saved);
})();
