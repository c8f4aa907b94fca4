'use strict';
// histo web UI: no framework, no CDN, no inline script (the page's CSP forbids it).
// The token lives in sessionStorage only and is sent as an Authorization header, never in a URL.
(() => {
  const $ = (id) => document.getElementById(id);
  const state = { token: sessionStorage.getItem('histo.token') || '', role: null, current: null, ws: null, urls: [] };

  const headers = () => ({ Authorization: 'Bearer ' + state.token });
  const setStatus = (el, text, cls) => { el.textContent = text; el.className = 'status ' + (cls || ''); };

  async function api(path, opts = {}) {
    const resp = await fetch(path, { ...opts, headers: { ...(opts.headers || {}), ...headers() } });
    if (!resp.ok) {
      let msg = resp.status + ' ' + resp.statusText;
      try { const j = await resp.json(); msg = j.message || j.error || msg; } catch (_) { /* not JSON */ }
      const err = new Error(msg); err.status = resp.status; throw err;
    }
    return resp;
  }

  function claims(token) {
    try { return JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/'))); } catch (_) { return null; }
  }

  // -- token ---------------------------------------------------------------------------------
  async function useToken(token) {
    state.token = token.trim();
    const c = claims(state.token);
    if (!c) { setStatus($('token-status'), 'That does not look like a token.', 'bad'); return; }
    sessionStorage.setItem('histo.token', state.token);
    state.role = c.role;
    $('who').textContent = `${c.sub} · ${c.role} · expires ${new Date(c.exp * 1000).toLocaleTimeString()}`;
    setStatus($('token-status'), 'Token set for this tab.', 'ok');
    $('token').value = '';
    connectEvents();
    refreshJobs();
    refreshCluster();
  }
  $('use-token').addEventListener('click', () => useToken($('token').value));
  $('forget-token').addEventListener('click', () => {
    sessionStorage.removeItem('histo.token'); state.token = ''; $('who').textContent = 'not signed in';
    if (state.ws) state.ws.close(); setStatus($('token-status'), 'Forgotten.', '');
  });

  // -- upload with progress ----------------------------------------------------------------
  $('upload-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const file = $('image').files[0];
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
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* ignore */ }
      if (xhr.status === 202) {
        setStatus($('upload-status'), `Accepted as job ${body.id}.`, 'ok');
        watchJob(body.id);
        refreshJobs();
      } else {
        setStatus($('upload-status'), `${xhr.status}: ${body.message || body.error || 'refused'}`, 'bad');
      }
    };
    xhr.onerror = () => setStatus($('upload-status'), 'Network error.', 'bad');
    $('upload-progress').value = 0;
    setStatus($('upload-status'), 'Uploading…', '');
    xhr.send(form);
  });

  // -- a job: progress, then result and plot ------------------------------------------------
  async function watchJob(id) {
    state.current = id;
    $('result-job').textContent = id;
    $('result-img').removeAttribute('src');
    $('hist-img').removeAttribute('src');
    for (let i = 0; i < 600 && state.current === id; i++) {
      let job;
      try { job = await (await api(`/api/v1/jobs/${id}`)).json(); } catch (e) { $('job-state').textContent = e.message; return; }
      $('job-progress').value = 100 * (job.progress || 0);
      $('job-state').textContent = job.state + (job.reason ? ': ' + job.reason : '');
      $('job-state').className = 'state-' + job.state;
      if (job.state === 'done') { await showResult(job); return; }
      if (job.state === 'failed') return;
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  async function blobUrl(path) { return URL.createObjectURL(await (await api(path)).blob()); }

  async function showResult(job) {
    $('result-img').src = await blobUrl(`/api/v1/jobs/${job.id}/result`);
    $('hist-img').src = await blobUrl(`/api/v1/jobs/${job.id}/histogram.png`);
    const t = job.timings || {};
    $('timings').textContent = Object.entries(t).map(([k, v]) => `${k} ${(v * 1000).toFixed(0)} ms`).join(' · ');
    refreshJobs();
  }

  async function refreshJobs() {
    if (!state.token) return;
    let jobs = [];
    try { jobs = (await (await api('/api/v1/jobs')).json()).jobs; } catch (_) { return; }
    const tbody = $('jobs').querySelector('tbody');
    tbody.replaceChildren(...jobs.slice(0, 15).map((j) => {
      const tr = document.createElement('tr');
      tr.className = 'clickable';
      const cells = [j.id.slice(0, 10) + '…', j.state, j.mode, `${j.width}×${j.height} ${j.format}`,
        j.timings && j.timings.total ? (j.timings.total * 1000).toFixed(0) + ' ms' : ''];
      cells.forEach((text, i) => {
        const td = document.createElement('td'); td.textContent = text;
        if (i === 1) td.className = 'state-' + j.state;
        if (i === 0) td.className = 'mono';
        tr.appendChild(td);
      });
      tr.addEventListener('click', () => watchJob(j.id));
      return tr;
    }));
  }

  // -- cluster view ------------------------------------------------------------------------
  function nodeCard(n, role, leader) {
    const div = document.createElement('div');
    div.className = 'node' + (leader ? ' leader' : '');
    const r = document.createElement('span'); r.className = 'role';
    r.textContent = role + (role === 'master' ? (leader ? ' · leader' : ' · standby') : '');
    const b = document.createElement('b'); b.textContent = n.name;
    const exp = document.createElement('span'); exp.className = 'small';
    const left = n.cert_not_after ? Math.round((Date.parse(n.cert_not_after) - Date.now()) / 1000) : null;
    exp.textContent = left === null ? 'cert: ?' : `cert expires in ${left}s`;
    const id = document.createElement('div'); id.className = 'small mono'; id.textContent = n.spiffe_id || '';
    div.append(r, b, exp, id);
    return div;
  }

  async function refreshCluster() {
    if (!state.token || !['viewer', 'admin'].includes(state.role)) return;
    try {
      const c = await (await api('/api/v1/cluster')).json();
      $('cluster').replaceChildren(...c.masters.map((m) => nodeCard(m, 'master', m.leader)),
        ...c.workers.map((w) => nodeCard(w, 'worker', false)));
    } catch (e) { $('cluster').textContent = e.message; }
  }
  setInterval(refreshCluster, 3000);
  setInterval(refreshJobs, 5000);

  // -- SecOps events over an authenticated WebSocket ------------------------------------------
  function connectEvents() {
    if (state.ws) state.ws.close();
    if (!state.token) return;
    const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/api/v1/events');
    state.ws = ws;
    ws.onopen = () => ws.send(JSON.stringify({ type: 'auth', token: state.token }));
    ws.onmessage = (m) => {
      const msg = JSON.parse(m.data);
      if (msg.type === 'ready') { $('ws-state').textContent = 'live'; $('ws-state').className = 'pill live'; return; }
      if (msg.type !== 'event') return;
      const e = msg.event;
      if (e.kind === 'job_progress' && e.job === state.current) $('job-progress').value = 100 * (e.progress || 0);
      if (e.kind === 'job_progress') return;
      const li = document.createElement('li');
      const t = document.createElement('time'); t.textContent = new Date(e.ts * 1000).toLocaleTimeString();
      const k = document.createElement('span'); k.className = 'sev-' + e.severity; k.textContent = e.kind;
      const d = document.createElement('span');
      d.textContent = Object.entries(e).filter(([key]) => !['ts', 'kind', 'severity', 'audience'].includes(key))
        .map(([key, v]) => `${key}=${typeof v === 'object' ? JSON.stringify(v) : v}`).join('  ');
      li.append(t, k, d);
      $('events').prepend(li);
      while ($('events').children.length > 200) $('events').lastChild.remove();
    };
    ws.onclose = () => { $('ws-state').textContent = 'offline'; $('ws-state').className = 'pill'; };
  }

  if (state.token) useToken(state.token);
})();
