// piagent's chat page. Plain JavaScript, no build step. Every URL is relative, so the
// page works at / and under any sub-path a proxy puts it at. Model output and titles
// never reach the page as HTML of their own: Markdown is rendered with raw HTML shown
// as text, then sanitised by DOMPurify; everything else is set as text.
(() => {
  'use strict';

  const KEY_STORAGE = 'piagent.apiKey';
  const AGENT_STORAGE = 'piagent.agent';
  const CONVERSATION_ID = /^[A-Za-z0-9._:-]{1,128}$/;
  const LIST_LIMIT = 50;

  const $ = (id) => document.getElementById(id);
  const ui = {
    agent: $('agent'),
    agentDescription: $('agent-description'),
    toggleSidebar: $('toggle-sidebar'),
    sidebar: $('sidebar'),
    newChat: $('new-chat'),
    conversations: $('conversations'),
    conversationsNote: $('conversations-note'),
    keyButton: $('key-button'),
    keyPanel: $('key-panel'),
    keyReason: $('key-reason'),
    keyForm: $('key-form'),
    keyInput: $('api-key'),
    forgetKey: $('forget-key'),
    closeKey: $('close-key'),
    messages: $('messages'),
    empty: $('empty'),
    notice: $('notice'),
    composer: $('composer'),
    message: $('message'),
    send: $('send'),
    stop: $('stop'),
  };

  const state = {
    conversationId: null,
    controller: null, // the AbortController of the reply being streamed
    waitTimer: null, // the countdown after a 503
    unsavedKey: '', // the API key, when the browser keeps no local storage
  };

  // --- talking to piagent -------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, detail, retryAfter = null) {
      super(detail);
      this.status = status;
      this.detail = detail;
      this.retryAfter = retryAfter;
    }
  }

  // localStorage throws when the browser has it switched off; the page then works
  // without remembering anything.
  function recall(name) {
    try {
      return localStorage.getItem(name) || '';
    } catch {
      return '';
    }
  }

  function remember(name, value) {
    try {
      if (value === null) localStorage.removeItem(name);
      else localStorage.setItem(name, value);
      return true;
    } catch {
      return false;
    }
  }

  function storedKey() {
    return recall(KEY_STORAGE) || state.unsavedKey;
  }

  async function api(path, init = {}) {
    const headers = new Headers(init.headers || {});
    const key = storedKey();
    if (key) headers.set('Authorization', `Bearer ${key}`);
    let response;
    try {
      response = await fetch(path, { ...init, headers, cache: 'no-store' });
    } catch (error) {
      if (error.name === 'AbortError') throw error;
      throw new ApiError(0, 'piagent cannot be reached: is the network up, and piagent running?');
    }
    if (!response.ok) throw await errorOf(response);
    return response;
  }

  async function errorOf(response) {
    let detail = `${response.status} ${response.statusText}`.trim();
    try {
      const body = await response.json();
      if (body && body.detail !== undefined) detail = detailText(body.detail);
    } catch {
      // not JSON (a proxy's own page): the status line has to do
    }
    const retryAfter = Number.parseInt(response.headers.get('Retry-After') || '', 10);
    return new ApiError(response.status, detail, Number.isFinite(retryAfter) ? retryAfter : null);
  }

  function detailText(detail) {
    if (typeof detail === 'string') return detail;
    if (Array.isArray(detail)) {
      return detail
        .map((item) => {
          const where = (item.loc || []).filter((part) => part !== 'body').join('.');
          return where ? `${where}: ${item.msg}` : String(item.msg);
        })
        .join('; ');
    }
    return JSON.stringify(detail);
  }

  // What went wrong, in words; a 401 also opens the key panel.
  function explain(error) {
    const { status, detail } = error;
    switch (status) {
      case 0:
        return detail;
      case 401:
        askForKey(storedKey() ? 'piagent did not accept the saved API key. Enter the right one.'
          : 'This piagent needs an API key. Enter it to go on.');
        return `An API key is needed: ${detail}`;
      case 409:
        return 'Still answering the previous message in this conversation. ' +
          'Send this one again when that reply has finished.';
      case 502:
        return `The model server has a problem: ${detail}`;
      case 503:
        return `Cannot answer right now: ${detail}`;
      case 504:
        return `The model server took too long: ${detail}`;
      case 413:
        return `The message is too large: ${detail}`;
      case 422:
        return `Not sent: ${detail}`;
      default:
        return `${status}: ${detail}`;
    }
  }

  // --- notices ----------------------------------------------------------------------

  function showNotice(text) {
    stopWaiting();
    ui.notice.textContent = text;
    ui.notice.hidden = false;
  }

  function hideNotice() {
    stopWaiting();
    ui.notice.hidden = true;
    ui.notice.textContent = '';
  }

  // A 503 with Retry-After: count down, and allow sending again at the end.
  function waitThenAllow(text, seconds) {
    showNotice('');
    const line = document.createElement('span');
    const count = document.createElement('span');
    count.className = 'countdown';
    ui.notice.append(line, ' ', count);
    line.textContent = text;
    let left = seconds;
    const tick = () => {
      if (left > 0) {
        count.textContent = `You can send again in ${left} s.`;
        left -= 1;
        return;
      }
      count.textContent = 'You can send again now.';
      stopWaiting();
    };
    ui.send.disabled = true;
    tick();
    state.waitTimer = setInterval(tick, 1000);
  }

  function stopWaiting() {
    if (state.waitTimer !== null) clearInterval(state.waitTimer);
    state.waitTimer = null;
    ui.send.disabled = false;
  }

  function showError(error) {
    if (error.status === 503 && error.retryAfter !== null) {
      waitThenAllow(explain(error), error.retryAfter);
    } else {
      showNotice(explain(error));
    }
  }

  // --- the API key --------------------------------------------------------------------

  function askForKey(reason) {
    ui.keyReason.textContent = reason;
    openKeyPanel();
  }

  function openKeyPanel() {
    ui.keyPanel.hidden = false;
    ui.keyButton.setAttribute('aria-expanded', 'true');
    ui.keyInput.focus();
  }

  function closeKeyPanel() {
    ui.keyPanel.hidden = true;
    ui.keyButton.setAttribute('aria-expanded', 'false');
  }

  function saveKey(event) {
    event.preventDefault();
    const key = ui.keyInput.value.trim();
    if (!key) return;
    state.unsavedKey = remember(KEY_STORAGE, key) ? '' : key;
    ui.keyInput.value = '';
    closeKeyPanel();
    hideNotice();
    start();
  }

  function forgetKey() {
    remember(KEY_STORAGE, null);
    state.unsavedKey = '';
    ui.keyInput.value = '';
    showNotice('The API key is forgotten in this browser.');
  }

  // --- agents -------------------------------------------------------------------------

  async function loadAgents() {
    const { agents } = await (await api('agents')).json();
    const details = await Promise.all(
      agents.map((name) => api(`agents/${encodeURIComponent(name)}`)
        .then((response) => response.json())
        .catch(() => ({ name, description: '' }))),
    );
    ui.agent.replaceChildren(...details.map((agent) => {
      const option = document.createElement('option');
      option.value = agent.name;
      option.textContent = agent.name;
      option.dataset.description = agent.description || '';
      return option;
    }));
    const wanted = recall(AGENT_STORAGE);
    if (wanted && agents.includes(wanted)) ui.agent.value = wanted;
    else if (agents.includes('general')) ui.agent.value = 'general';
    ui.agent.disabled = false;
    describeAgent();
  }

  function describeAgent() {
    const option = ui.agent.selectedOptions[0];
    ui.agentDescription.textContent = option ? option.dataset.description : '';
  }

  function chooseAgent() {
    remember(AGENT_STORAGE, ui.agent.value);
    describeAgent();
  }

  // --- conversations ------------------------------------------------------------------

  function setConversation(id) {
    state.conversationId = id;
    // In the address, so that reloading the page comes back to it.
    history.replaceState(null, '', id ? `#${encodeURIComponent(id)}` : location.pathname + location.search);
    for (const item of ui.conversations.children) {
      const current = item.dataset.id === id;
      item.classList.toggle('current', current);
      const open = item.querySelector('.open');
      if (current) open.setAttribute('aria-current', 'true');
      else open.removeAttribute('aria-current');
    }
  }

  async function refreshConversations() {
    let listing;
    try {
      listing = await (await api(`conversations?limit=${LIST_LIMIT}`)).json();
    } catch (error) {
      ui.conversationsNote.textContent = `The list cannot be shown: ${explain(error)}`;
      return;
    }
    const items = listing.conversations.map(conversationItem);
    ui.conversations.replaceChildren(...items);
    ui.conversationsNote.textContent = items.length ? '' : 'No conversation yet.';
    setConversation(state.conversationId);
  }

  function conversationItem(conversation) {
    const item = document.createElement('li');
    item.dataset.id = conversation.conversation_id;
    const open = document.createElement('button');
    open.type = 'button';
    open.className = 'open';
    const title = document.createElement('span');
    title.className = 'title';
    title.textContent = conversation.title || conversation.conversation_id;
    const when = document.createElement('span');
    when.className = 'when';
    const time = document.createElement('time');
    time.dateTime = conversation.updated_at;
    time.textContent = ago(new Date(conversation.updated_at));
    time.title = new Date(conversation.updated_at).toLocaleString();
    const count = conversation.messages === 1 ? '1 message' : `${conversation.messages} messages`;
    when.append(time, ` · ${count}`);
    open.append(title, when);
    open.addEventListener('click', () => openConversation(conversation.conversation_id));

    const remove = document.createElement('button');
    remove.type = 'button';
    remove.className = 'delete ghost';
    remove.textContent = '✕';
    const label = `Delete conversation: ${title.textContent}`;
    remove.setAttribute('aria-label', label);
    // Two steps, without a dialog: the first press asks, the second deletes.
    remove.addEventListener('click', () => {
      if (remove.dataset.armed) {
        deleteConversation(conversation.conversation_id);
        return;
      }
      remove.dataset.armed = 'yes';
      remove.textContent = 'Delete';
      remove.setAttribute('aria-label', `Confirm: ${label}`);
    });
    remove.addEventListener('blur', () => {
      delete remove.dataset.armed;
      remove.textContent = '✕';
      remove.setAttribute('aria-label', label);
    });
    item.append(open, remove);
    return item;
  }

  function ago(date) {
    const seconds = Math.max(0, (Date.now() - date.getTime()) / 1000);
    if (seconds < 60) return 'just now';
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
    if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
    return date.toLocaleDateString();
  }

  async function openConversation(id, { quiet = false } = {}) {
    if (state.controller) {
      showNotice('Stop the reply, or wait for it to finish, before opening another conversation.');
      return;
    }
    closeSidebar();
    let transcript;
    try {
      transcript = await (await api(`conversations/${encodeURIComponent(id)}`)).json();
    } catch (error) {
      if (error.status === 404) {
        newChat();
        if (!quiet) showNotice('That conversation is no longer remembered; this is a new one.');
        refreshConversations();
        return;
      }
      showError(error);
      return;
    }
    hideNotice();
    clearMessages();
    for (const message of transcript.messages) {
      if (message.role === 'user') addUserMessage(message.content);
      else new Reply(message.content).finish();
    }
    setConversation(id);
    ui.message.focus();
  }

  async function deleteConversation(id) {
    try {
      await api(`conversations/${encodeURIComponent(id)}`, { method: 'DELETE' });
    } catch (error) {
      if (error.status !== 404) {
        showError(error);
        return;
      }
    }
    if (id === state.conversationId) newChat();
    await refreshConversations();
    ui.newChat.focus();
  }

  function newChat() {
    if (state.controller) {
      showNotice('Stop the reply, or wait for it to finish, before starting another conversation.');
      return;
    }
    clearMessages();
    setConversation(null);
    closeSidebar();
    ui.message.focus();
  }

  // --- messages -----------------------------------------------------------------------

  function clearMessages() {
    ui.messages.replaceChildren(ui.empty);
    ui.empty.hidden = false;
  }

  function appendMessage(article) {
    ui.empty.hidden = true;
    ui.messages.append(article);
    ui.messages.scrollTop = ui.messages.scrollHeight;
  }

  function addUserMessage(text) {
    const article = document.createElement('article');
    article.className = 'message user';
    const who = document.createElement('h2');
    who.className = 'visually-hidden';
    who.textContent = 'You';
    const body = document.createElement('div');
    body.className = 'body';
    body.textContent = text;
    article.append(who, body);
    appendMessage(article);
    return article;
  }

  // Markdown without raw HTML: any HTML the model writes is shown as text, and images
  // become links (loading them would send a request to wherever the model pointed).
  const markdown = new marked.Marked({
    gfm: true,
    renderer: {
      html(token) {
        const text = escapeHtml(token.text);
        return token.block ? `<p class="raw">${text}</p>` : text;
      },
      image(token) {
        return `<a href="${escapeHtml(token.href)}">${escapeHtml(token.text || token.href)}</a>`;
      },
    },
  });
  const SANITIZE = {
    ALLOWED_TAGS: ['a', 'blockquote', 'br', 'code', 'del', 'em', 'h1', 'h2', 'h3', 'h4', 'h5',
      'h6', 'hr', 'input', 'li', 'ol', 'p', 'pre', 'strong', 'table', 'tbody', 'td', 'th',
      'thead', 'tr', 'ul'],
    ALLOWED_ATTR: ['href', 'title', 'class', 'start', 'align', 'type', 'checked', 'disabled'],
    ALLOW_DATA_ATTR: false,
  };
  DOMPurify.addHook('afterSanitizeAttributes', (node) => {
    if (node.tagName === 'A') {
      node.setAttribute('target', '_blank');
      node.setAttribute('rel', 'noopener noreferrer');
    } else if (node.tagName === 'INPUT') {
      node.setAttribute('disabled', ''); // task-list boxes only show
    }
  });

  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  }

  function renderMarkdown(target, text) {
    target.innerHTML = DOMPurify.sanitize(markdown.parse(text), SANITIZE);
    for (const pre of target.querySelectorAll('pre')) {
      const block = document.createElement('div');
      block.className = 'code-block';
      pre.replaceWith(block);
      const copy = document.createElement('button');
      copy.type = 'button';
      copy.className = 'copy ghost';
      copy.textContent = 'Copy';
      copy.setAttribute('aria-label', 'Copy code');
      copy.addEventListener('click', () => copyCode(copy, pre.textContent));
      block.append(copy, pre);
    }
  }

  async function copyCode(button, text) {
    try {
      await copyText(text);
      button.textContent = 'Copied';
    } catch {
      button.textContent = 'Copy failed';
    }
    setTimeout(() => { button.textContent = 'Copy'; }, 1500);
  }

  async function copyText(text) {
    // The Clipboard API exists only on https or localhost; a Pi on the LAN is plain http.
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return;
    }
    const area = document.createElement('textarea');
    area.value = text;
    area.setAttribute('readonly', '');
    area.className = 'offscreen';
    document.body.append(area);
    area.select();
    const copied = document.execCommand('copy');
    area.remove();
    if (!copied) throw new Error('the browser refused to copy');
  }

  // One reply of the model: text that grows as fragments arrive, then its ending.
  class Reply {
    constructor(text = '') {
      this.text = text;
      this.article = document.createElement('article');
      this.article.className = 'message assistant';
      const who = document.createElement('h2');
      who.className = 'visually-hidden';
      who.textContent = 'piagent';
      this.body = document.createElement('div');
      this.body.className = 'body markdown';
      this.meta = document.createElement('p');
      this.meta.className = 'meta';
      this.article.append(who, this.body, this.meta);
      this.frame = null;
      appendMessage(this.article);
    }

    streaming() {
      this.article.setAttribute('aria-busy', 'true');
      this.article.classList.add('streaming');
      this.meta.textContent = 'Waiting for the model…';
    }

    append(fragment) {
      this.text += fragment;
      this.meta.textContent = 'Writing…';
      // At most one render a frame, however fast fragments come.
      if (this.frame === null) {
        this.frame = requestAnimationFrame(() => {
          this.frame = null;
          this.render();
        });
      }
    }

    render() {
      const follow = nearBottom();
      renderMarkdown(this.body, this.text);
      if (follow) ui.messages.scrollTop = ui.messages.scrollHeight;
    }

    finish(stats = '') {
      if (this.frame !== null) cancelAnimationFrame(this.frame);
      this.frame = null;
      this.render();
      this.article.removeAttribute('aria-busy');
      this.article.classList.remove('streaming');
      this.meta.textContent = stats;
    }

    incomplete(why) {
      this.finish(why);
      this.article.classList.add('incomplete');
    }

    remove() {
      if (this.frame !== null) cancelAnimationFrame(this.frame);
      this.article.remove();
    }
  }

  function nearBottom() {
    const { scrollTop, scrollHeight, clientHeight } = ui.messages;
    return scrollHeight - scrollTop - clientHeight < 80;
  }

  function statsLine(done, timing) {
    const parts = [];
    if (done.model) parts.push(done.model);
    const tokens = done.usage && done.usage.completion_tokens;
    if (Number.isFinite(tokens)) {
      parts.push(tokens === 1 ? '1 token' : `${tokens} tokens`);
      const writing = (timing.doneAt - timing.firstAt) / 1000;
      // Fragments that came all at once (a tiny reply) give no meaningful rate.
      if (tokens > 1 && writing >= 0.05) parts.push(`${((tokens - 1) / writing).toFixed(1)} tokens/s`);
    }
    if (timing.firstAt !== null) {
      parts.push(`first token ${((timing.firstAt - timing.sentAt) / 1000).toFixed(2)} s`);
    }
    if (done.done_reason === 'length') parts.push('cut at the token limit');
    return parts.join(' · ');
  }

  // --- sending ------------------------------------------------------------------------

  function setStreaming(controller) {
    state.controller = controller;
    ui.send.hidden = controller !== null;
    ui.stop.hidden = controller === null;
    if (controller === null && document.activeElement === document.body) ui.message.focus();
  }

  async function send(text) {
    hideNotice();
    const body = { message: text, stream: true, agent: ui.agent.value || undefined };
    const headers = { 'Content-Type': 'application/json', Accept: 'application/x-ndjson' };
    if (state.conversationId) {
      body.conversation_id = state.conversationId;
      headers['X-Conversation-Id'] = state.conversationId;
    }
    const question = addUserMessage(text);
    const reply = new Reply();
    reply.streaming();
    const controller = new AbortController();
    setStreaming(controller);
    const timing = { sentAt: performance.now(), firstAt: null, doneAt: null };

    let response;
    try {
      response = await api('chat', {
        method: 'POST',
        headers,
        body: JSON.stringify(body),
        signal: controller.signal,
      });
    } catch (error) {
      // Nothing was answered, so nothing was kept: take the message back into the box.
      question.remove();
      reply.remove();
      if (!ui.message.value) ui.message.value = text;
      if (ui.messages.querySelectorAll('.message').length === 0) ui.empty.hidden = false;
      setStreaming(null);
      if (error.name === 'AbortError') showNotice('Stopped before the reply began.');
      else showError(error);
      return;
    }

    const id = response.headers.get('X-Conversation-Id');
    if (id && id !== state.conversationId) setConversation(id);
    const ending = await readEvents(response, reply, timing);
    timing.doneAt = performance.now();
    if (ending.kind === 'done') {
      reply.finish(statsLine(ending.event, timing));
    } else if (ending.kind === 'error') {
      reply.incomplete(`Incomplete: ${detailText(ending.detail)}`);
    } else if (ending.kind === 'stopped') {
      reply.incomplete('Stopped. What was written so far is kept in the conversation.');
    } else {
      reply.incomplete('Incomplete: the connection broke before the reply finished.');
    }
    setStreaming(null);
    refreshConversations();
  }

  // Read NDJSON events as they arrive: one JSON object a line.
  async function readEvents(response, reply, timing) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    let ending = { kind: 'broken' };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let newline = buffer.indexOf('\n');
        while (newline >= 0) {
          const line = buffer.slice(0, newline).trim();
          buffer = buffer.slice(newline + 1);
          newline = buffer.indexOf('\n');
          if (!line) continue;
          const event = JSON.parse(line);
          if (event.type === 'delta') {
            if (timing.firstAt === null) timing.firstAt = performance.now();
            reply.append(event.text);
          } else if (event.type === 'done') {
            ending = { kind: 'done', event };
          } else if (event.type === 'error') {
            ending = { kind: 'error', detail: event.detail };
          }
        }
      }
    } catch (error) {
      if (error.name === 'AbortError') return { kind: 'stopped' };
      return { kind: 'broken' };
    }
    return ending;
  }

  function submit(event) {
    if (event) event.preventDefault();
    const text = ui.message.value;
    if (!text.trim() || state.controller || ui.send.disabled) return;
    ui.message.value = '';
    fitMessageBox();
    send(text);
  }

  function fitMessageBox() {
    ui.message.style.height = 'auto';
    ui.message.style.height = `${ui.message.scrollHeight}px`;
  }

  // --- the sidebar on narrow screens --------------------------------------------------

  function toggleSidebar() {
    const open = !document.body.classList.contains('sidebar-open');
    document.body.classList.toggle('sidebar-open', open);
    ui.toggleSidebar.setAttribute('aria-expanded', String(open));
    if (open) ui.newChat.focus();
  }

  function closeSidebar() {
    if (!document.body.classList.contains('sidebar-open')) return;
    document.body.classList.remove('sidebar-open');
    ui.toggleSidebar.setAttribute('aria-expanded', 'false');
  }

  // --- start --------------------------------------------------------------------------

  async function start() {
    try {
      await loadAgents();
    } catch (error) {
      showError(error);
      return;
    }
    await refreshConversations();
    if (state.conversationId) await openConversation(state.conversationId, { quiet: true });
  }

  function wire() {
    ui.composer.addEventListener('submit', submit);
    ui.message.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) submit(event);
    });
    ui.message.addEventListener('input', fitMessageBox);
    ui.stop.addEventListener('click', () => {
      if (state.controller) state.controller.abort();
    });
    ui.agent.addEventListener('change', chooseAgent);
    ui.newChat.addEventListener('click', newChat);
    ui.toggleSidebar.addEventListener('click', toggleSidebar);
    ui.keyButton.addEventListener('click', () => {
      if (ui.keyPanel.hidden) openKeyPanel();
      else closeKeyPanel();
    });
    ui.keyForm.addEventListener('submit', saveKey);
    ui.forgetKey.addEventListener('click', forgetKey);
    ui.closeKey.addEventListener('click', closeKeyPanel);
    document.addEventListener('keydown', (event) => {
      if (event.key === 'Escape') {
        closeSidebar();
        if (!ui.keyPanel.hidden) closeKeyPanel();
      }
    });
  }

  wire();
  try {
    const fromAddress = decodeURIComponent(location.hash.slice(1));
    if (CONVERSATION_ID.test(fromAddress)) state.conversationId = fromAddress;
  } catch {
    // a malformed address starts a new conversation
  }
  start();
})();
