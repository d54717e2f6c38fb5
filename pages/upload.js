// The Data Upload page's uploader: files and whole folders, in chunks to /api/uploads, resuming after a dropped connection.
// Each file is sent `chunkSize` bytes at a time (PUT /api/uploads/<path>?offset=&total=, raw body); before starting (and after a failure) the
// server is asked how much it already has (`?resume=true`), so a file continues where it stopped.
window.vireoUpload = (function () {
  const api = { chunkSize: 8 * 1024 * 1024, running: 0, maxFailures: 30 };
  window.addEventListener('beforeunload', (event) => {
    if (api.running > 0) { event.preventDefault(); event.returnValue = ''; }
  });
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  // The session's CSRF token (components/frame.py): Vireo refuses a change made with the session cookie without it.
  const csrfToken = () => (document.querySelector('meta[name="vireo-csrf"]') || {}).content || '';
  const encodePath = (path) => path.split('/').map(encodeURIComponent).join('/');
  const human = (n) => n >= 1e9 ? (n / 1e9).toFixed(2) + ' GB' : n >= 1e6 ? (n / 1e6).toFixed(1) + ' MB' : n >= 1e3 ? (n / 1e3).toFixed(0) + ' kB' : n + ' B';

  async function received(path) {
    const response = await fetch('/api/uploads/' + encodePath(path) + '?resume=true', { credentials: 'same-origin' });
    if (!response.ok) return 0;
    const body = await response.json();
    return body.complete ? 0 : body.offset;
  }

  async function sendFile(file, path, onProgress) {
    let offset = await received(path);
    if (offset > file.size) offset = 0;
    let failures = 0;
    for (;;) {
      const end = Math.min(offset + api.chunkSize, file.size);
      const url = '/api/uploads/' + encodePath(path) + '?offset=' + offset + '&total=' + file.size;
      let response;
      try {
        response = await fetch(url, { method: 'PUT', body: file.slice(offset, end), credentials: 'same-origin',
                                      headers: { 'Content-Type': 'application/octet-stream', 'X-Vireo-CSRF': csrfToken() } });
      } catch (error) {  // the connection dropped: wait, ask where to continue, go on
        failures += 1;
        if (failures > api.maxFailures) throw new Error('the connection keeps failing: ' + error);
        onProgress(offset, 'connection lost, resuming…');
        await sleep(Math.min(500 * 2 ** failures, 15000));
        try { offset = await received(path); } catch (_) { /* still offline: retry the same chunk */ }
        continue;
      }
      const body = await response.json().catch(() => ({}));
      if (response.status === 409 && Number.isInteger(body.offset)) { offset = body.offset; continue; }  // else: a path that collides
      if (!response.ok) throw new Error(body.detail || ('HTTP ' + response.status));
      failures = 0;
      offset = body.offset;
      onProgress(offset, '');
      if (body.complete) return;
    }
  }

  async function entriesOf(entry, prefix, out) {
    if (entry.isFile) {
      out.push(await new Promise((resolve, reject) => entry.file((f) => resolve({ file: f, path: prefix + f.name }), reject)));
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (!batch.length) break;
        for (const child of batch) await entriesOf(child, prefix + entry.name + '/', out);
      }
    }
  }

  async function filesOfDrop(dataTransfer) {
    const out = [];
    const entries = Array.from(dataTransfer.items || []).map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry()).filter(Boolean);
    if (entries.length) { for (const entry of entries) await entriesOf(entry, '', out); return out; }
    return Array.from(dataTransfer.files).map((f) => ({ file: f, path: f.name }));
  }

  function row(list, path, size) {
    const item = document.createElement('div');
    item.className = 'upload-row';
    item.dataset.path = path;
    item.innerHTML = '<div class="upload-name"></div><progress max="1" value="0"></progress><span class="upload-state"></span>';
    item.querySelector('.upload-name').textContent = path + ' (' + human(size) + ')';
    list.appendChild(item);
    return item;
  }

  api.upload = async function (files, root) {
    root = root || document.getElementById('vireo-uploader');
    const list = root.querySelector('.upload-list');
    const overall = root.querySelector('.upload-overall progress');
    const overallText = root.querySelector('.upload-overall span');
    const total = files.reduce((sum, f) => sum + f.file.size, 0) || 1;
    const done = new Map();
    const update = () => {
      const sent = Array.from(done.values()).reduce((a, b) => a + b, 0);
      overall.value = sent / total;
      overallText.textContent = human(sent) + ' of ' + human(total);
    };
    api.running += 1;
    let failed = 0;
    try {
      for (const { file, path } of files) {
        const item = row(list, path, file.size);
        const bar = item.querySelector('progress');
        const state = item.querySelector('.upload-state');
        try {
          await sendFile(file, path, (offset, note) => {
            bar.value = file.size ? offset / file.size : 1;
            state.textContent = note;
            done.set(path, offset);
            update();
          });
          bar.value = 1;
          done.set(path, file.size);
          update();
          item.dataset.state = 'done';
          state.textContent = 'done';
        } catch (error) {
          failed += 1;
          item.dataset.state = 'failed';
          bar.classList.add('upload-failed');
          state.textContent = 'failed: ' + error.message;
        }
      }
    } finally {
      api.running -= 1;
      if (window.emitEvent) window.emitEvent('vireo-uploads-changed', { failed: failed });
    }
  };

  // Listeners on the document, for any uploader on the page: they work from the moment this script runs,
  // before the page's websocket is up (a file chosen in the first moments after loading was once ignored).
  const uploaderOf = (target) => (target instanceof Element ? target.closest('.vireo-uploader') : null);
  const prefixOf = (root) => (root.querySelector('.upload-prefix-input') || { value: '' }).value.replace(/^\/+|\/+$/g, '');
  const withPrefix = (root, files) => {
    const prefix = prefixOf(root);
    return files.map((f) => ({ file: f.file, path: prefix ? prefix + '/' + f.path : f.path }));
  };
  const zoneOf = (target) => (target instanceof Element ? target.closest('.vireo-uploader .upload-drop') : null);
  document.addEventListener('dragover', (event) => {
    const zone = zoneOf(event.target);
    if (zone) { event.preventDefault(); zone.classList.add('upload-hover'); }
  });
  document.addEventListener('dragleave', (event) => {
    const zone = zoneOf(event.target);
    if (zone) zone.classList.remove('upload-hover');
  });
  document.addEventListener('drop', async (event) => {
    const zone = zoneOf(event.target);
    if (!zone) return;
    event.preventDefault();
    zone.classList.remove('upload-hover');
    const root = uploaderOf(zone);
    api.upload(withPrefix(root, await filesOfDrop(event.dataTransfer)), root);
  });
  document.addEventListener('change', (event) => {
    const input = event.target;
    const root = uploaderOf(input);
    if (!root || !(input instanceof HTMLInputElement) || input.type !== 'file') return;
    const files = Array.from(input.files).map((f) => ({ file: f, path: f.webkitRelativePath || f.name }));
    input.value = '';
    api.upload(withPrefix(root, files), root);
  });
  return api;
})();
