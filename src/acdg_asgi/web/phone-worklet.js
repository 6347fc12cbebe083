// Audio thread of the browser phone: two AudioWorklet processors.
//
// "acdg-capture" turns the microphone (at the AudioContext's rate, often 44.1 or 48 kHz)
// into 16-bit frames of exactly `frameMs` at the negotiated rate (16 or 8 kHz).
// "acdg-player" plays agent audio from one continuous queue, so consecutive chunks and
// streams join without gaps, and reports how much of each stream has actually played.

// A windowed-sinc low-pass, so that downsampling does not fold the high band into speech.
function lowPass(cutoff, taps) {
  const h = new Float32Array(taps);
  const mid = (taps - 1) / 2;
  let sum = 0;
  for (let i = 0; i < taps; i++) {
    const x = i - mid;
    const sinc = x === 0 ? 2 * cutoff : Math.sin(2 * Math.PI * cutoff * x) / (Math.PI * x);
    const hamming = 0.54 - 0.46 * Math.cos((2 * Math.PI * i) / (taps - 1));
    h[i] = sinc * hamming;
    sum += h[i];
  }
  for (let i = 0; i < taps; i++) h[i] /= sum; // unity gain at DC
  return h;
}

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { targetRate, frameMs } = options.processorOptions;
    this.step = sampleRate / targetRate; // input samples per output sample
    this.frameSamples = Math.round((targetRate * frameMs) / 1000);
    this.taps = lowPass((0.45 * targetRate) / sampleRate, 63);
    this.history = new Float32Array(this.taps.length * 2); // ring of recent input, mirrored
    this.head = 0;
    this.filtered = [0, 0]; // the last two filtered input samples, for interpolation
    this.pos = 0; // where the next output sample falls, relative to filtered[0]
    this.frame = new Int16Array(this.frameSamples);
    this.fill = 0;
  }

  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (!input) return true; // no microphone yet (or it went away): keep the node alive
    const taps = this.taps, n = taps.length, ring = this.history;
    for (let i = 0; i < input.length; i++) {
      // Each ring slot is written twice, so the newest `n` samples are always contiguous.
      ring[this.head] = ring[this.head + n] = input[i];
      this.head = (this.head + 1) % n;
      let y = 0;
      for (let k = 0; k < n; k++) y += taps[k] * ring[this.head + k];
      this.filtered[0] = this.filtered[1];
      this.filtered[1] = y;
      // Emit every output sample that falls between the last two filtered samples.
      while (this.pos <= 1) {
        const v = this.filtered[0] + (this.filtered[1] - this.filtered[0]) * this.pos;
        this.frame[this.fill++] = Math.max(-32768, Math.min(32767, Math.round(v * 32768)));
        if (this.fill === this.frameSamples) {
          this.port.postMessage(this.frame, [this.frame.buffer]);
          this.frame = new Int16Array(this.frameSamples);
          this.fill = 0;
        }
        this.pos += this.step;
      }
      this.pos -= 1;
    }
    return true;
  }
}

class PlayerProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = []; // {stream, samples: Float32Array, rate}
    this.offset = 0; // read position (fractional) in queue[0].samples
    this.played = {}; // stream id -> samples played (at the stream's own rate)
    this.open = new Set(); // streams whose end has not been announced
    this.gaps = 0; // times the queue ran dry while a stream was still open
    this.dry = true;
    this.sinceReport = 0;
    this.port.onmessage = ({ data }) => {
      if (data.type === "chunk") {
        this.queue.push(data);
        this.open.add(data.stream);
      } else if (data.type === "end") {
        this.open.delete(data.stream);
      } else if (data.type === "flush") {
        // Barge-in: drop what is queued, at once.
        this.queue = [];
        this.offset = 0;
        this.open.clear();
        this.report();
      }
    };
  }

  report() {
    this.port.postMessage({ type: "played", played: { ...this.played }, gaps: this.gaps,
                            queued: this.queue.length > 0 });
    this.sinceReport = 0;
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    for (let i = 0; i < out.length; i++) {
      const item = this.queue[0];
      if (!item) {
        if (!this.dry && this.open.size > 0) this.gaps++;
        this.dry = true;
        out[i] = 0;
        continue;
      }
      this.dry = false;
      // Linear interpolation between neighbouring samples; the next chunk supplies the
      // right-hand neighbour at a chunk boundary, so joins are seamless.
      const s = item.samples, j = Math.floor(this.offset), frac = this.offset - j;
      const next = j + 1 < s.length ? s[j + 1] : this.queue[1] ? this.queue[1].samples[0] : s[j];
      out[i] = s[j] + (next - s[j]) * frac;
      const step = item.rate / sampleRate;
      this.played[item.stream] = (this.played[item.stream] || 0) + step;
      this.offset += step;
      if (this.offset >= s.length) {
        this.offset -= s.length;
        this.queue.shift();
      }
    }
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    this.sinceReport += out.length;
    if (this.sinceReport >= sampleRate / 50) this.report(); // about every 20 ms
    return true;
  }
}

registerProcessor("acdg-capture", CaptureProcessor);
registerProcessor("acdg-player", PlayerProcessor);
