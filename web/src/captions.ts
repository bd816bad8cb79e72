/**
 * Captions of the agent's voice: the answer's words revealed while its audio is audible, at the pace of speech,
 * so they follow what the listeners hear rather than the text the LLM already wrote. When the answer is
 * interrupted they stop at the heard text (`tts_cancelled.heard_text`); when it completes they show the end.
 */

/** Characters per second of typical TTS speech (OpenAI and ElevenLabs voices read about 14-17). */
const CHARS_PER_SECOND = 16;
/** Audio level (RMS) above which the agent is audible. */
const AUDIBLE = 0.01;
/** Characters of the answer shown at most (the tail, cut at a word). */
const SHOWN = 110;

export class Captions {
  private turn: string | undefined;
  private text = '';
  private shown = 0;
  private limit = Infinity;
  private lastTick = 0;
  private hideTimer: number | undefined;

  constructor(private readonly el: HTMLElement) {}

  /** The answer of `turn` so far (streamed text grows; captions reveal it as it is spoken). */
  update(turn: string, text: string): void {
    if (turn !== this.turn) {
      this.turn = turn;
      this.shown = 0;
      this.limit = Infinity;
      this.lastTick = 0;
    }
    this.text = text;
  }

  /** The agent's audio level, sampled every few tens of ms. */
  tick(level: number, now = performance.now()): void {
    if (!this.turn) return;
    const dt = this.lastTick ? Math.min(0.25, (now - this.lastTick) / 1000) : 0;
    this.lastTick = now;
    if (level < AUDIBLE) return;
    const next = Math.min(this.text.length, this.limit, this.shown + dt * CHARS_PER_SECOND);
    if (Math.floor(next) !== Math.floor(this.shown)) {
      this.shown = next;
      this.render();
    } else {
      this.shown = next;
    }
  }

  /** The turn ended: `heard` (interrupted) is where the captions stop; without it the whole answer was heard. */
  finish(turn: string, heard?: string): void {
    if (turn !== this.turn) return;
    if (heard !== undefined) {
      this.limit = heard.length;
      this.text = heard;
    }
    this.shown = this.text.length;
    this.render();
    this.turn = undefined;
    window.clearTimeout(this.hideTimer);
    this.hideTimer = window.setTimeout(() => this.clear(), 4000);
  }

  clear(): void {
    this.turn = undefined;
    this.el.textContent = '';
    this.el.hidden = true;
    this.el.dataset.shown = '0';
  }

  private render(): void {
    window.clearTimeout(this.hideTimer);
    let visible = this.text.slice(0, Math.floor(this.shown));
    if (visible.length < this.text.length && !/\s/.test(this.text[visible.length] ?? ' ')) {
      visible = visible.slice(0, Math.max(0, visible.search(/\s\S*$/))); // whole words only
    }
    let tail = visible;
    if (tail.length > SHOWN) {
      tail = tail.slice(-SHOWN);
      const space = tail.indexOf(' ');
      tail = `…${space >= 0 ? tail.slice(space + 1) : tail}`;
    }
    this.el.textContent = tail;
    this.el.hidden = !tail;
    this.el.dataset.shown = String(visible.length);
    this.el.dataset.turn = this.turn ?? '';
  }
}
