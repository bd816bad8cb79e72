/**
 * Network quality of the local connection. LiveKit servers report it (ConnectionQualityChanged); when the
 * server does not (the development server), it is measured here from WebRTC statistics: the round-trip time of
 * the active ICE candidate pair and the packet loss of the received audio.
 */

import { ConnectionQuality, type Room, type Track } from 'livekit-client';

export type QualityLevel = 'excellent' | 'good' | 'poor' | 'lost' | 'unknown';

export interface NetworkQuality {
  level: QualityLevel;
  /** `server`: LiveKit's own rating; `measured`: from the statistics below. */
  source: 'server' | 'measured';
  rttMs?: number;
  /** Received packets lost over the last interval, in percent. */
  lossPct?: number;
}

/** The rating for a round-trip time and a loss rate (thresholds close to LiveKit's own). */
export function rateNetwork(rttMs: number | undefined, lossPct: number | undefined): QualityLevel {
  if (rttMs === undefined && lossPct === undefined) return 'unknown';
  const rtt = rttMs ?? 0;
  const loss = lossPct ?? 0;
  if (rtt <= 200 && loss < 1) return 'excellent';
  if (rtt <= 400 && loss < 5) return 'good';
  return 'poor';
}

const FROM_SERVER: Record<ConnectionQuality, QualityLevel> = {
  [ConnectionQuality.Excellent]: 'excellent',
  [ConnectionQuality.Good]: 'good',
  [ConnectionQuality.Poor]: 'poor',
  [ConnectionQuality.Lost]: 'lost',
  [ConnectionQuality.Unknown]: 'unknown',
};

export class ConnectionHealth {
  current: NetworkQuality = { level: 'unknown', source: 'measured' };
  private timer: number | undefined;
  private serverRated = false;
  private lastLost = 0;
  private lastReceived = 0;

  constructor(
    private readonly room: Room,
    private readonly onChange: (quality: NetworkQuality) => void,
    private readonly intervalMs = 2000,
  ) {}

  start(): void {
    this.stop();
    this.timer = window.setInterval(() => void this.measure(), this.intervalMs);
    void this.measure();
  }

  stop(): void {
    if (this.timer !== undefined) window.clearInterval(this.timer);
    this.timer = undefined;
    this.lastLost = this.lastReceived = 0;
  }

  /** LiveKit's own rating; once the server rates, its rating wins over the measurement. */
  fromServer(quality: ConnectionQuality): void {
    const level = FROM_SERVER[quality];
    if (level === 'unknown') return;
    this.serverRated = true;
    this.set({ ...this.current, level, source: 'server' });
  }

  private set(next: NetworkQuality): void {
    const changed =
      next.level !== this.current.level || next.source !== this.current.source || next.rttMs !== this.current.rttMs;
    this.current = next;
    if (changed) this.onChange(next);
  }

  private statsTrack(): Track | undefined {
    for (const p of this.room.remoteParticipants.values()) {
      for (const pub of p.audioTrackPublications.values()) if (pub.track) return pub.track;
    }
    for (const pub of this.room.localParticipant.audioTrackPublications.values()) if (pub.track) return pub.track;
    return undefined;
  }

  private async measure(): Promise<void> {
    const track = this.statsTrack();
    if (!track) return;
    let report: RTCStatsReport | undefined;
    try {
      report = await track.getRTCStatsReport();
    } catch {
      return;
    }
    if (!report) return;
    let rtt: number | undefined;
    let lost = 0;
    let received = 0;
    report.forEach((stat: Record<string, unknown>) => {
      if (stat.type === 'candidate-pair' && stat.state === 'succeeded' && typeof stat.currentRoundTripTime === 'number') {
        rtt = Math.round(stat.currentRoundTripTime * 1000);
      }
      if (stat.type === 'inbound-rtp' && typeof stat.packetsReceived === 'number') {
        received += stat.packetsReceived;
        lost += typeof stat.packetsLost === 'number' ? Math.max(0, stat.packetsLost) : 0;
      }
    });
    let lossPct: number | undefined;
    const dReceived = received - this.lastReceived;
    const dLost = lost - this.lastLost;
    if (this.lastReceived > 0 && dReceived + dLost > 0) lossPct = (100 * dLost) / (dReceived + dLost);
    this.lastLost = lost;
    this.lastReceived = received;
    const rttMs = rtt;
    if (this.serverRated) {
      this.set({ ...this.current, rttMs, lossPct });
      return;
    }
    this.set({ level: rateNetwork(rttMs, lossPct), source: 'measured', rttMs, lossPct });
  }
}
