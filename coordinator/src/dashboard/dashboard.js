// lathe's dashboard: live updates over server-sent events and actions without leaving the page.
// The server renders every row (escaped); this script only puts rows and numbers in place.
(() => {
  'use strict';
  const body = document.body;
  const live = document.getElementById('live');

  const parseRow = (html) => {
    const template = document.createElement('template');
    template.innerHTML = html.trim();
    return template.content.firstElementChild;
  };
  const setText = (selector, text) => {
    for (const element of document.querySelectorAll(selector)) {
      element.textContent = String(text);
    }
  };
  const setLive = (text) => {
    if (live) live.textContent = text;
  };
  // A stream the server refused (signed out: 401; a job not there: 404) is not tried again.
  const streamError = (source) => () => {
    setLive(source.readyState === EventSource.CLOSED ? 'stopped: reload the page' : 'reconnecting…');
  };
  const counted = () => {
    body.dataset.updates = String(Number(body.dataset.updates || '0') + 1);
  };

  // A job's page: counts, progress bar and changed rows from /jobs/{id}/events.
  let jobSource = null;
  const applyStatus = (status) => {
    body.dataset.state = status.state;
    setText('[data-field=state]', status.state);
    for (const element of document.querySelectorAll('[data-field=state]')) {
      element.className = `state state-${status.state}`;
    }
    setText('[data-field=priority]', status.priority);
    setText('[data-field=paused]', status.paused);
    setText('[data-field=finished]', status.finished);
    setText('[data-field=total]', status.total);
    setText('[data-field=eta]', status.eta);
    for (const [name, count] of Object.entries(status.counts)) {
      setText(`[data-count=${name}]`, count);
    }
    const bar = document.getElementById('job-progress');
    if (bar) bar.value = status.fraction;
    for (const task of status.tasks) {
      const row = document.getElementById(`task-${task.index}`);
      if (!row) continue;
      if (task.row !== undefined) {
        const fresh = parseRow(task.row);
        if (fresh) row.replaceWith(fresh);
        continue;
      }
      const cell = row.querySelector('[data-cell=phase]');
      if (!cell) continue;
      const phase = cell.querySelector('span');
      if (phase) phase.textContent = task.phase;
      let progress = cell.querySelector('progress');
      if (!progress) {
        progress = document.createElement('progress');
        progress.max = 1;
        cell.append(' ', progress);
      }
      progress.value = task.fraction;
    }
    counted();
    if (status.ended) {
      setLive(`job ${status.state}`);
      jobSource.close();
      jobSource = null;
    }
  };
  const followJob = () => {
    if (jobSource || !body.dataset.job) return;
    jobSource = new EventSource(`/jobs/${encodeURIComponent(body.dataset.job)}/events`);
    jobSource.addEventListener('open', () => setLive('live'));
    jobSource.addEventListener('status', (event) => applyStatus(JSON.parse(event.data)));
    jobSource.addEventListener('problem', (event) => setLive(JSON.parse(event.data).message));
    jobSource.addEventListener('error', streamError(jobSource));
  };
  if (body.dataset.page === 'job' && body.dataset.live === 'true') followJob();

  // The jobs list: changed rows from /events.
  if (body.dataset.page === 'jobs') {
    const table = document.querySelector('#jobs tbody');
    const source = new EventSource(`/events?after=${encodeURIComponent(body.dataset.after || '')}`);
    source.addEventListener('open', () => setLive('live'));
    source.addEventListener('error', streamError(source));
    source.addEventListener('jobs', (event) => {
      for (const job of JSON.parse(event.data).jobs) {
        const row = document.getElementById(`job-${job.id}`);
        if (job.removed) {
          if (row) row.remove();
          continue;
        }
        const fresh = parseRow(job.row);
        if (!fresh) continue;
        if (row) {
          row.replaceWith(fresh);
        } else if (
          body.dataset.lastPage === 'true' &&
          table.rows.length < Number(body.dataset.pageRows) &&
          (body.dataset.after || '') < job.id
        ) {
          // A new job: it belongs at the end of the last page.
          table.append(fresh);
          const empty = document.getElementById('no-jobs');
          if (empty) empty.remove();
        }
      }
      counted();
    });
  }

  // Actions: post the form, say what happened, keep the page (updates come over the stream).
  for (const form of document.querySelectorAll('form[data-action]')) {
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const message = document.getElementById('action-message');
      const say = (text, bad) => {
        if (!message) return;
        message.textContent = text;
        message.className = bad ? 'bad' : 'good';
      };
      try {
        const response = await fetch(form.action, {
          method: 'POST',
          headers: { Accept: 'application/json' },
          body: new URLSearchParams(new FormData(form)),
        });
        if (response.ok) {
          say((await response.json()).message, false);
          followJob();
        } else {
          const page = new DOMParser().parseFromString(await response.text(), 'text/html');
          const detail = page.querySelector('.detail');
          say(detail ? detail.textContent : `HTTP ${response.status}`, true);
        }
      } catch (error) {
        say(String(error), true);
      }
    });
  }
})();
