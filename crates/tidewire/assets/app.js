// The tidewire chat page: conversations in a sidebar, answers streamed with
// tidewire.js (which resumes a dropped stream exactly), rendered as Markdown
// built from DOM nodes, so model output is only ever text: never HTML, never script.

import { Tidewire, TidewireError } from '/tidewire.js';

const $ = (id) => document.getElementById(id);
const KEY = 'tidewire.token';
/** How often an idle page looks for answers written from elsewhere (another tab). */
const POLL_MS = 1500;

const client = new Tidewire({ token: localStorage.getItem(KEY) || null });
const state = {
  conversationId: null,
  /** The answer streaming in this page, if any. */
  answering: null,
  /** Runs this page already follows or finished (so polling does not attach twice). */
  followed: new Set(),
  /** Message ids shown, to notice new ones. */
  shown: [],
};

// --- Markdown, as DOM nodes ------------------------------------------------------

const INLINE = /(`[^`\n]+`)|(\*\*[^*\n]+\*\*)|(\*[^*\s\n][^*\n]*\*)|\[([^\]\n]+)\]\((https?:\/\/[^\s)]+)\)/g;

function inline(text, parent) {
  let at = 0;
  for (const match of text.matchAll(INLINE)) {
    if (match.index > at) parent.append(text.slice(at, match.index));
    const [whole, code, bold, italic, label, url] = match;
    let node;
    if (code) {
      node = document.createElement('code');
      node.textContent = code.slice(1, -1);
    } else if (bold) {
      node = document.createElement('strong');
      node.textContent = bold.slice(2, -2);
    } else if (italic) {
      node = document.createElement('em');
      node.textContent = italic.slice(1, -1);
    } else {
      node = document.createElement('a');
      node.textContent = label;
      node.href = url;
      node.rel = 'noopener noreferrer';
      node.target = '_blank';
    }
    parent.append(node);
    at = match.index + whole.length;
  }
  if (at < text.length) parent.append(text.slice(at));
}

function lines(parent, textLines) {
  textLines.forEach((line, i) => {
    if (i > 0) parent.append(document.createElement('br'));
    inline(line, parent);
  });
}

/** Renders Markdown text (fenced code, headings, lists, paragraphs, inline code,
 * bold, italic, http links) as a fragment. Text only ever becomes text nodes. */
export function renderMarkdown(text) {
  const out = document.createDocumentFragment();
  const all = text.split('\n');
  let i = 0;
  let paragraph = [];
  const flush = () => {
    if (paragraph.length) {
      const p = document.createElement('p');
      lines(p, paragraph);
      out.append(p);
      paragraph = [];
    }
  };
  while (i < all.length) {
    const line = all[i];
    const fence = line.match(/^\s*```\s*([\w+-]*)\s*$/);
    if (fence) {
      flush();
      const code = [];
      i += 1;
      while (i < all.length && !/^\s*```\s*$/.test(all[i])) code.push(all[i++]);
      i += 1; // the closing fence (or the end, while it streams)
      const pre = document.createElement('pre');
      const el = document.createElement('code');
      if (fence[1]) el.dataset.lang = fence[1];
      el.textContent = code.join('\n');
      pre.append(el);
      out.append(pre);
      continue;
    }
    const heading = line.match(/^(#{1,6})\s+(.*)$/);
    if (heading) {
      flush();
      const h = document.createElement(`h${Math.min(6, heading[1].length + 2)}`);
      inline(heading[2], h);
      out.append(h);
      i += 1;
      continue;
    }
    const item = line.match(/^\s*([-*]|\d+[.)])\s+(.*)$/);
    if (item) {
      flush();
      const ordered = /\d/.test(item[1]);
      const list = document.createElement(ordered ? 'ol' : 'ul');
      while (i < all.length) {
        const next = all[i].match(/^\s*([-*]|\d+[.)])\s+(.*)$/);
        if (!next || /\d/.test(next[1]) !== ordered) break;
        const li = document.createElement('li');
        inline(next[2], li);
        list.append(li);
        i += 1;
      }
      out.append(list);
      continue;
    }
    if (line.trim() === '') flush();
    else paragraph.push(line);
    i += 1;
  }
  flush();
  return out;
}

// --- One answer on the page ---------------------------------------------------------

const STAGES = {
  query_analysis: 'Reading the question',
  retrieval: 'Searching the documents',
  generation: 'Writing',
  scoring: 'Checking the answer',
  follow_ups: 'Thinking of follow-up questions',
};

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

class AnswerView {
  constructor(container) {
    this.root = el('article', 'message assistant');
    this.root.setAttribute('aria-label', 'Answer');
    this.tools = el('ul', 'tools');
    this.bubble = el('div', 'bubble');
    this.meta = el('div', 'meta');
    this.sources = el('details', 'sources');
    this.followUps = el('div', 'follow-ups');
    this.failure = el('div', 'failure');
    this.sources.hidden = true;
    this.failure.hidden = true;
    this.root.append(this.tools, this.bubble, this.sources, this.meta, this.followUps, this.failure);
    container.append(this.root);
    this.toolItems = new Map();
    this.text = '';
  }

  /** Live region while it streams: screen readers follow the answer. */
  live(on) {
    if (on) {
      this.bubble.setAttribute('aria-live', 'polite');
      this.bubble.setAttribute('aria-busy', 'true');
    } else {
      this.bubble.setAttribute('aria-busy', 'false');
    }
  }

  thinking(stage) {
    if (this.text) return;
    this.bubble.replaceChildren(el('span', 'thinking', STAGES[stage] || 'Thinking'));
  }

  setText(text, streaming) {
    this.text = text;
    if (!text && streaming) return;
    const fragment = renderMarkdown(text);
    this.bubble.replaceChildren(fragment);
    if (streaming) {
      const last = this.bubble.lastElementChild;
      const target = last && last.tagName !== 'PRE' ? last : this.bubble;
      target.append(el('span', 'cursor'));
    }
  }

  toolStarted(call) {
    const item = el('li', '', `${call.tool_name}…`);
    item.dataset.tool = call.tool_name;
    this.toolItems.set(call.tool_call_id, item);
    this.tools.append(item);
  }

  toolFinished(call) {
    let item = this.toolItems.get(call.tool_call_id);
    if (!item) {
      item = el('li');
      this.tools.append(item);
    }
    item.dataset.tool = call.tool_name;
    item.textContent = `${call.tool_name} · ${call.duration_ms} ms${call.is_error ? ' · failed' : ''}`;
    if (call.is_error) item.classList.add('error');
  }

  setSources(sources) {
    this.sources.replaceChildren();
    if (!sources || !sources.length) {
      this.sources.hidden = true;
      return;
    }
    this.sources.hidden = false;
    this.sources.append(el('summary', '', `Sources (${sources.length})`));
    const list = el('ol');
    for (const source of sources) {
      const item = el('li');
      const name = el('strong', '', source.document_name);
      const score = el('span', 'score', `${Math.round(source.score * 100)}%`);
      item.append(name, ' ', score, el('div', 'excerpt', source.text));
      list.append(item);
    }
    this.sources.append(list);
  }

  setScore(score) {
    // A score says how well the sources support the answer: nothing without them.
    if (this.sources.hidden) return;
    this.meta.querySelector('.score')?.remove();
    const badge = el('span', 'score', `quality ${Math.round(score * 100)}%`);
    badge.title = 'How well the sources support the answer';
    this.meta.prepend(badge);
  }

  setFollowUps(questions, ask) {
    this.followUps.replaceChildren();
    for (const question of questions || []) {
      const button = el('button', '', question);
      button.type = 'button';
      button.addEventListener('click', () => ask(question));
      this.followUps.append(button);
    }
  }

  finish(status, error, retry) {
    this.setText(this.text, false);
    this.live(false);
    this.failure.replaceChildren();
    this.failure.hidden = true;
    if (status === 'complete') return;
    const tag = el('span', 'status-tag', status === 'cancelled' ? 'Stopped' : status === 'interrupted' ? 'Interrupted' : 'Failed');
    this.meta.append(tag);
    if (status === 'failed' || status === 'interrupted') {
      this.failure.hidden = false;
      this.failure.append(el('span', '', error?.error || 'The answer could not be finished.'));
      if (retry) {
        const button = el('button', '', 'Retry');
        button.type = 'button';
        button.addEventListener('click', retry);
        this.failure.append(button);
      }
    }
  }

  /** A stored answer. */
  fill(message, ask, retry) {
    for (const call of message.tool_calls || []) {
      this.toolStarted(call);
      if (call.duration_ms !== undefined) this.toolFinished(call);
    }
    this.text = message.content || '';
    this.setSources(message.sources);
    if (typeof message.quality_score === 'number') this.setScore(message.quality_score);
    this.setFollowUps(message.follow_up_questions, ask);
    this.finish(message.status, null, retry);
  }
}

// --- The page -----------------------------------------------------------------------

function notice(text, kind = '') {
  const box = $('notice');
  box.textContent = text || '';
  box.className = `notice ${kind}`;
  box.hidden = !text;
}

function setBusy(busy) {
  $('input').disabled = busy;
  $('send').disabled = busy;
  $('send').hidden = busy;
  $('stop').hidden = !busy;
  if (!busy) $('input').focus();
}

function scrollDown() {
  const box = $('messages');
  box.scrollTop = box.scrollHeight;
}

function userView(text) {
  const root = el('article', 'message user');
  root.setAttribute('aria-label', 'You');
  root.append(el('div', 'bubble', text));
  $('messages').append(root);
}

function setHash(id) {
  const want = id ? `#c=${encodeURIComponent(id)}` : '';
  if (location.hash !== want) history.replaceState(null, '', want || location.pathname);
}

function hashConversation() {
  const match = location.hash.match(/^#c=(.+)$/);
  return match ? decodeURIComponent(match[1]) : null;
}

async function needKey(error) {
  if (!(error instanceof TidewireError) || error.status !== 401) return false;
  notice('This server needs an API key.', 'error');
  $('key-dialog').showModal();
  return true;
}

/** Follows `answer` into `view` until its end. */
async function follow(answer, view, question) {
  state.answering = answer;
  setBusy(true);
  view.live(true);
  answer
    .on('run', (run) => {
      state.followed.add(run.run_id);
      if (state.conversationId !== run.conversation_id) {
        state.conversationId = run.conversation_id;
        setHash(run.conversation_id);
        refreshSidebar();
      }
    })
    .on('stage', (stage) => view.thinking(stage.stage))
    .on('text', (text) => {
      view.setText(text, true);
      scrollDown();
    })
    .on('sources', (sources) => view.setSources(sources.sources))
    .on('tool_started', (call) => view.toolStarted(call))
    .on('tool_finished', (call) => view.toolFinished(call))
    .on('quality_score', (score) => view.setScore(score.quality_score))
    .on('follow_up_questions', (f) => view.setFollowUps(f.follow_up_questions, ask))
    .on('reconnecting', () => notice('Connection lost; reconnecting…'))
    .on('reconnected', () => notice(''));
  const result = await answer.done;
  notice('');
  view.text = answer.text;
  const retry = question ? () => ask(question) : null;
  view.finish(result.status, result.error, retry);
  if (result.error?.code === 'unauthorized') $('key-dialog').showModal();
  state.answering = null;
  state.shown.push(result.messageId);
  setBusy(false);
  scrollDown();
  refreshSidebar();
}

function ask(question) {
  question = question.trim();
  if (!question || state.answering) return;
  if (!state.shown.length) {
    $('messages').replaceChildren();
    $('title').textContent = question.slice(0, 80);
  }
  userView(question);
  const view = new AnswerView($('messages'));
  view.thinking('query_analysis');
  scrollDown();
  const answer = client.ask(question, { conversationId: state.conversationId || undefined });
  follow(answer, view, question);
}

async function openConversation(id) {
  if (state.answering) return;
  state.conversationId = id;
  setHash(id);
  markCurrent();
  let messages;
  try {
    messages = await client.messages(id);
  } catch (error) {
    if (await needKey(error)) return;
    notice(error.message, 'error');
    return;
  }
  render(messages);
}

/** Shows `messages`; an answer still being written is followed live. */
function render(messages) {
  const box = $('messages');
  box.replaceChildren();
  state.shown = messages.map((m) => m.id);
  const first = messages.find((m) => m.role === 'user');
  $('title').textContent = first ? first.content.slice(0, 80) : 'New chat';
  let question = null;
  for (const message of messages) {
    if (message.role === 'user') {
      question = message.content;
      userView(message.content);
      continue;
    }
    const view = new AnswerView(box);
    const asked = question;
    if (message.status === 'streaming' && message.run_id) {
      // Written now, maybe from another tab: follow it from its start.
      view.thinking('generation');
      follow(client.attach(message.run_id), view, asked);
    } else {
      view.fill(message, ask, asked ? () => ask(asked) : null);
    }
  }
  if (!messages.length) box.append(el('p', 'empty', 'Ask anything about your documents.'));
  scrollDown();
}

function markCurrent() {
  for (const item of $('conversations').children) {
    item.setAttribute('aria-current', String(item.dataset.id === state.conversationId));
  }
}

async function refreshSidebar() {
  let list;
  try {
    list = await client.listConversations();
  } catch (error) {
    if (!(await needKey(error))) notice(error.message, 'error');
    return;
  }
  const box = $('conversations');
  box.replaceChildren();
  for (const conversation of list.conversations) {
    const item = el('li');
    item.dataset.id = conversation.id;
    const link = el('a', '', conversation.title || 'Untitled');
    link.href = `#c=${encodeURIComponent(conversation.id)}`;
    link.addEventListener('click', (event) => {
      event.preventDefault();
      closeSidebar();
      openConversation(conversation.id);
    });
    const remove = el('button', 'delete', '×');
    remove.type = 'button';
    remove.setAttribute('aria-label', `Delete ${conversation.title || 'conversation'}`);
    remove.addEventListener('click', async () => {
      try {
        await client.deleteConversation(conversation.id);
      } catch (error) {
        notice(error.message, 'error');
        return;
      }
      if (state.conversationId === conversation.id) newChat();
      refreshSidebar();
    });
    item.append(link, remove);
    box.append(item);
  }
  markCurrent();
}

function newChat() {
  if (state.answering) return;
  state.conversationId = null;
  state.shown = [];
  setHash(null);
  $('title').textContent = 'New chat';
  $('messages').replaceChildren(el('p', 'empty', 'Ask anything about your documents.'));
  markCurrent();
  $('input').focus();
}

/** An idle page looks for answers started elsewhere in the open conversation. */
async function poll() {
  if (state.answering || !state.conversationId || document.visibilityState !== 'visible') return;
  let messages;
  try {
    messages = await client.messages(state.conversationId);
  } catch {
    return;
  }
  if (state.answering) return;
  const fresh = messages.some((m) => !state.shown.includes(m.id));
  const live = messages.some((m) => m.status === 'streaming' && m.run_id && !state.followed.has(m.run_id));
  if (fresh || live) render(messages);
}

async function upload(files) {
  if (!files.length) return;
  notice(`Adding ${files.length} document${files.length > 1 ? 's' : ''}…`);
  try {
    const added = await client.uploadDocuments([...files]);
    const count = added.documents ? added.documents.length : files.length;
    notice(`Added ${count} document${count === 1 ? '' : 's'}.`);
  } catch (error) {
    if (!(await needKey(error))) notice(`Upload failed: ${error.message}`, 'error');
  }
}

function closeSidebar() {
  $('sidebar').classList.remove('open');
  $('toggle-sidebar').setAttribute('aria-expanded', 'false');
}

function wire() {
  $('composer').addEventListener('submit', (event) => {
    event.preventDefault();
    const input = $('input');
    const text = input.value;
    if (!text.trim()) return;
    input.value = '';
    ask(text);
  });
  $('input').addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $('composer').requestSubmit();
    }
  });
  $('stop').addEventListener('click', () => state.answering?.stop());
  $('new-chat').addEventListener('click', () => {
    closeSidebar();
    newChat();
  });
  $('toggle-sidebar').addEventListener('click', () => {
    const open = $('sidebar').classList.toggle('open');
    $('toggle-sidebar').setAttribute('aria-expanded', String(open));
  });
  $('upload-input').addEventListener('change', (event) => {
    upload(event.target.files);
    event.target.value = '';
  });
  $('key-button').addEventListener('click', () => $('key-dialog').showModal());
  $('key-dialog').addEventListener('close', () => {
    if ($('key-dialog').returnValue !== 'save') return;
    const key = $('key-input').value.trim();
    if (key) localStorage.setItem(KEY, key);
    else localStorage.removeItem(KEY);
    client.token = key || null;
    notice('');
    refreshSidebar();
    if (state.conversationId) openConversation(state.conversationId);
  });
  let depth = 0;
  window.addEventListener('dragenter', (event) => {
    if (![...(event.dataTransfer?.types || [])].includes('Files')) return;
    depth += 1;
    $('drop').hidden = false;
  });
  window.addEventListener('dragleave', () => {
    depth = Math.max(0, depth - 1);
    if (!depth) $('drop').hidden = true;
  });
  window.addEventListener('dragover', (event) => event.preventDefault());
  window.addEventListener('drop', (event) => {
    event.preventDefault();
    depth = 0;
    $('drop').hidden = true;
    upload(event.dataTransfer?.files || []);
  });
  window.addEventListener('hashchange', () => {
    const id = hashConversation();
    if (id && id !== state.conversationId) openConversation(id);
  });
  setInterval(poll, POLL_MS);
}

wire();
refreshSidebar();
const start = hashConversation();
if (start) openConversation(start);
else newChat();
