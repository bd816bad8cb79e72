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
