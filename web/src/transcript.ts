/**
 * The live transcript: one entry per utterance or answer, updated in place as text streams in, plus small
 * system rows (stage changes, tool calls). Rendering is plain DOM; every entry carries data attributes
 * (role, status, turn) that tests and styles read.
 */

export type EntryRole = 'user' | 'assistant' | 'system';
export type EntryStatus =
  | 'partial'
  | 'final'
  | 'streaming'
  | 'speaking'
  | 'spoken'
  | 'interrupted'
  | 'failed'
  | 'queued'
  | 'waiting'
  | 'dropped'
  | 'error'
  | 'info';

interface Entry {
  key: string;
  role: EntryRole;
  speaker: string;
  text: string;
  status: EntryStatus;
  note: string;
  local: boolean;
  typed: boolean;
  /** What the listeners heard of an interrupted answer; the rest is shown struck through. */
  heard: string | undefined;
  el: HTMLLIElement;
}

const STATUS_LABEL: Partial<Record<EntryStatus, string>> = {
  streaming: 'Writing…',
  speaking: 'Speaking…',
  spoken: 'Spoken',
  interrupted: 'Interrupted',
  failed: 'No answer',
  queued: 'Queued',
  waiting: 'Waiting for the assistant',
  dropped: 'Not answered',
};

/** Where `heard` ends in `text`: the words match, whitespace may differ. */
export function heardCut(text: string, heard: string): number {
  let j = 0;
  const h = heard.trim();
  for (let i = 0; i < text.length; i++) {
    while (j < h.length && /\s/.test(h[j])) j++;
    if (j >= h.length) return i;
    if (/\s/.test(text[i])) continue;
    if (text[i] !== h[j]) return Math.min(text.length, h.length);
    j++;
  }
  return text.length;
}

export class TranscriptView {
  private readonly entries = new Map<string, Entry>();
  private stick = true;
  private seq = 0;

  constructor(private readonly list: HTMLOListElement) {
    const scroller = list;
    scroller.addEventListener('scroll', () => {
      this.stick = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;
    });
  }

  clear(): void {
    this.entries.clear();
    this.list.replaceChildren();
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  /** The entry's status (a typed message queued, waiting for the assistant, dropped by a stop). */
  status(key: string): EntryStatus | undefined {
    return this.entries.get(key)?.status;
  }

  /** Set the status of an existing entry (with an optional note after its label). */
  setStatus(key: string, status: EntryStatus, note = ''): void {
    const entry = this.entries.get(key);
    if (!entry) return;
    entry.status = status;
    entry.note = note;
    this.render(entry);
  }

  /** The answer of `turn` was interrupted: the listeners heard `heard`; the rest shows as never spoken. */
  heard(turn: string, speaker: string, heard: string): void {
    const entry = this.entries.get(`a:${turn}`);
    if (!entry) return;
    if (speaker) entry.speaker = speaker;
    entry.heard = heard;
    this.render(entry);
  }

  /** The answer of `turn` failed (`note` says why, in words a person can act on). */
  failed(turn: string, speaker: string, note: string): void {
    const entry = this.entries.get(`a:${turn}`);
    if (!entry) return;
    if (speaker) entry.speaker = speaker;
    if (entry.status === 'interrupted' || entry.status === 'spoken') return;
    entry.status = 'failed';
    entry.note = note;
    this.render(entry);
  }

  /** Answers still writing or speaking when the call ended: marked interrupted with `note`. */
  closeOpen(note: string): void {
    for (const entry of this.entries.values()) {
      if (entry.role !== 'assistant' || !['partial', 'streaming', 'speaking'].includes(entry.status)) continue;
      entry.status = 'interrupted';
      entry.note = note;
      this.render(entry);
    }
  }

  /** The text of `turn`'s answer so far. */
  answer(turn: string): string {
    return this.entries.get(`a:${turn}`)?.text ?? '';
  }

  /** Give an entry a new key (a partial result that became final under its turn's key). */
  rekey(from: string, to: string): void {
    const entry = this.entries.get(from);
    if (!entry || this.entries.has(to)) return;
    this.entries.delete(from);
    entry.key = to;
    this.entries.set(to, entry);
  }

  /** A user's words: partial results replace each other until the final one. */
  user(key: string, speaker: string, text: string, opts: { final: boolean; local: boolean; typed: boolean }): void {
    const entry = this.upsert(key, 'user', speaker, { local: opts.local, typed: opts.typed });
    entry.text = text;
    entry.status = opts.final ? 'final' : 'partial';
    this.render(entry);
  }

  /** Append streamed assistant text to the answer of `turn`. */
  appendAssistant(turn: string, speaker: string, delta: string): void {
    const entry = this.upsert(`a:${turn}`, 'assistant', speaker);
    entry.text += delta;
    if (entry.status === 'partial') entry.status = 'streaming';
    this.render(entry);
  }

  /** The complete answer of `turn` (replaces the streamed text, which it equals when nothing was lost). */
  completeAssistant(turn: string, speaker: string, text: string): void {
    const entry = this.upsert(`a:${turn}`, 'assistant', speaker);
    if (text) entry.text = text;
    if (entry.status === 'partial' || entry.status === 'streaming') entry.status = 'final';
    this.render(entry);
  }

  /** The assistant's speech status of `turn`: speaking, spoken, or interrupted (with a note). */
  speech(turn: string, speaker: string, status: 'speaking' | 'spoken' | 'interrupted', note = ''): void {
    const entry = this.entries.get(`a:${turn}`); // an answer without words (nothing was written) has no entry
    if (!entry) return;
    if (speaker) entry.speaker = speaker;
    if (entry.status === 'interrupted' && status !== 'interrupted') return;
    entry.status = status;
    entry.note = note;
    this.render(entry);
  }

  /** A one-line system row (stage change, tool call, error). */
  system(text: string, kind: 'stage' | 'tool' | 'error' | 'info' | 'vision', key?: string): void {
    const entry = this.upsert(key ?? `s:${++this.seq}`, 'system', '');
    entry.text = text;
    entry.status = kind === 'error' ? 'error' : 'info';
    entry.el.dataset.kind = kind;
    this.render(entry);
  }

  private upsert(key: string, role: EntryRole, speaker: string, opts: { local?: boolean; typed?: boolean } = {}): Entry {
    let entry = this.entries.get(key);
    if (!entry) {
      const el = document.createElement('li');
      el.className = `entry entry-${role}`;
      entry = {
        key,
        role,
        speaker,
        text: '',
        status: 'partial',
        note: '',
        local: opts.local ?? false,
        typed: opts.typed ?? false,
        heard: undefined,
        el,
      };
      this.entries.set(key, entry);
      this.list.appendChild(el);
    }
    if (speaker) entry.speaker = speaker;
    if (opts.typed !== undefined) entry.typed = opts.typed;
    return entry;
  }

  private render(entry: Entry): void {
    const { el } = entry;
    el.dataset.role = entry.role;
    el.dataset.status = entry.status;
    el.dataset.key = entry.key;
    el.classList.toggle('entry-local', entry.local);
    // Screen readers announce an entry once it is complete, not at every streamed chunk.
    el.setAttribute('aria-busy', String(entry.status === 'partial' || entry.status === 'streaming'));
    const parts: HTMLElement[] = [];
    if (entry.role !== 'system') {
      const head = document.createElement('div');
      head.className = 'entry-head';
      const who = document.createElement('span');
      who.className = 'entry-speaker';
      who.textContent = entry.local ? `${entry.speaker} (you)` : entry.speaker;
      head.appendChild(who);
      if (entry.typed) head.appendChild(badge('typed', 'badge'));
      const label = STATUS_LABEL[entry.status];
      if (label) head.appendChild(badge(entry.note ? `${label} · ${entry.note}` : label, `badge badge-${entry.status}`));
      parts.push(head);
    }
    const body = document.createElement('p');
    body.className = 'entry-text';
    if (entry.heard !== undefined && entry.status === 'interrupted') {
      const cut = heardCut(entry.text, entry.heard);
      const heard = document.createElement('span');
      heard.className = 'entry-heard';
      heard.textContent = entry.text.slice(0, cut);
      const rest = entry.text.slice(cut);
      body.appendChild(heard);
      if (rest.trim()) {
        const unheard = document.createElement('s');
        unheard.className = 'entry-unheard';
        unheard.title = 'Not spoken: the answer was interrupted here';
        const label = document.createElement('span');
        label.className = 'visually-hidden';
        label.textContent = ' (not spoken:) ';
        unheard.append(label, rest);
        body.appendChild(unheard);
      }
    } else {
      body.textContent = entry.text;
    }
    parts.push(body);
    el.replaceChildren(...parts);
    if (this.stick) this.list.scrollTop = this.list.scrollHeight;
  }
}

function badge(text: string, className: string): HTMLSpanElement {
  const span = document.createElement('span');
  span.className = className;
  span.textContent = text;
  return span;
}
