/** Audio level of a MediaStreamTrack (RMS, 0..1), sampled on a timer, for the speaking meters. */

let sharedContext: AudioContext | undefined;

/** The page's AudioContext; create and resume it from a user gesture (the join click). */
export function audioContext(): AudioContext {
  sharedContext ??= new AudioContext();
  if (sharedContext.state === 'suspended') void sharedContext.resume();
  return sharedContext;
}

export class LevelMeter {
  private readonly source: MediaStreamAudioSourceNode;
  private readonly analyser: AnalyserNode;
  private readonly buffer: Float32Array<ArrayBuffer>;
  private timer: number | undefined;
  /** The highest level seen since the meter started. */
  peak = 0;

  constructor(
    track: MediaStreamTrack,
    private readonly onLevel: (level: number, peak: number) => void,
    intervalMs = 80,
  ) {
    const ctx = audioContext();
    this.source = ctx.createMediaStreamSource(new MediaStream([track]));
    this.analyser = ctx.createAnalyser();
    this.analyser.fftSize = 1024;
    this.buffer = new Float32Array(this.analyser.fftSize);
    this.source.connect(this.analyser);
    this.timer = window.setInterval(() => this.sample(), intervalMs);
  }

  private sample(): void {
    this.analyser.getFloatTimeDomainData(this.buffer);
    let sum = 0;
    for (const v of this.buffer) sum += v * v;
    const level = Math.sqrt(sum / this.buffer.length);
    this.peak = Math.max(this.peak, level);
    this.onLevel(level, this.peak);
  }

  stop(): void {
    if (this.timer !== undefined) window.clearInterval(this.timer);
    this.timer = undefined;
    this.source.disconnect();
    this.analyser.disconnect();
    this.onLevel(0, this.peak);
  }
}

/**
 * Bars of the agent's voice: the energy of `bands` frequency bands of the speech range (about 90 Hz to 4 kHz),
 * each 0..1, sampled on a timer (timers keep running in background tabs, unlike animation frames).
 */
export class VoiceVisualiser {
  private readonly source: MediaStreamAudioSourceNode;
  private readonly analyser: AnalyserNode;
  private readonly bins: Uint8Array<ArrayBuffer>;
  private timer: number | undefined;

  constructor(
    track: MediaStreamTrack,
    private readonly onBands: (bands: number[]) => void,
    private readonly bands = 5,
    intervalMs = 60,
  ) {
    const ctx = audioContext();
    this.source = ctx.createMediaStreamSource(new MediaStream([track]));
    this.analyser = ctx.createAnalyser();
    this.analyser.fftSize = 512;
    this.analyser.smoothingTimeConstant = 0.6;
    this.bins = new Uint8Array(this.analyser.frequencyBinCount);
    this.source.connect(this.analyser);
    this.timer = window.setInterval(() => this.sample(ctx.sampleRate), intervalMs);
  }

  private sample(rate: number): void {
    this.analyser.getByteFrequencyData(this.bins);
    const hzPerBin = rate / 2 / this.bins.length;
    const lo = Math.log(90);
    const hi = Math.log(4000);
    const out: number[] = [];
    for (let b = 0; b < this.bands; b++) {
      const from = Math.max(1, Math.floor(Math.exp(lo + ((hi - lo) * b) / this.bands) / hzPerBin));
      const to = Math.max(from + 1, Math.floor(Math.exp(lo + ((hi - lo) * (b + 1)) / this.bands) / hzPerBin));
      let sum = 0;
      for (let i = from; i < to && i < this.bins.length; i++) sum += this.bins[i];
      out.push(Math.min(1, sum / (to - from) / 200));
    }
    this.onBands(out);
  }

  stop(): void {
    if (this.timer !== undefined) window.clearInterval(this.timer);
    this.timer = undefined;
    this.source.disconnect();
    this.analyser.disconnect();
    this.onBands(new Array<number>(this.bands).fill(0));
  }
}
