// Test page: the official livekit-client joins the development server, publishes the fake microphone,
// measures the pitch of the remote audio it receives and records data messages. Driven by Playwright.
import { Room, RoomEvent, Track } from 'livekit-client';

const state = {
  connected: false,
  published: false,
  data: [],
  audioPeakHz: null,
  remoteAudioTracks: 0,
  participants: [],
  error: null,
};
window.lkState = state;
let room = null;

function measurePitch(track) {
  const element = track.attach();
  element.muted = true;
  document.body.appendChild(element);
  const ctx = new AudioContext();
  const source = ctx.createMediaStreamSource(new MediaStream([track.mediaStreamTrack]));
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 8192;
  source.connect(analyser);
  const bins = new Float32Array(analyser.frequencyBinCount);
  setInterval(() => {
    ctx.resume();
    analyser.getFloatFrequencyData(bins);
    let best = 0;
    for (let i = 1; i < bins.length; i++) if (bins[i] > bins[best]) best = i;
    if (bins[best] > -80) state.audioPeakHz = (best * ctx.sampleRate) / analyser.fftSize;
  }, 200);
}

window.lkStart = async (url, token, singlePeerConnection) => {
  try {
    room = new Room({ adaptiveStream: false, dynacast: false, singlePeerConnection });
    room.on(RoomEvent.DataReceived, (payload, participant, kind, topic) => {
      state.data.push({ text: new TextDecoder().decode(payload), from: participant ? participant.identity : null, topic });
    });
    room.on(RoomEvent.TrackSubscribed, (track) => {
      if (track.kind === Track.Kind.Audio) {
        state.remoteAudioTracks += 1;
        measurePitch(track);
      }
    });
    room.on(RoomEvent.ParticipantConnected, () => {
      state.participants = Array.from(room.remoteParticipants.keys());
    });
    await room.connect(url, token);
    state.participants = Array.from(room.remoteParticipants.keys());
    state.connected = true;
    await room.localParticipant.setMicrophoneEnabled(true);
    state.published = true;
  } catch (err) {
    state.error = String(err && err.stack ? err.stack : err);
  }
};

window.lkSend = async (text, topic) => {
  await room.localParticipant.publishData(new TextEncoder().encode(text), { reliable: true, topic });
};

window.lkStop = async () => {
  if (room) await room.disconnect();
};
