// The hebbedge edge client: runs a model directory's learning cycle (predict, learn, refresh) with
// ONNX Runtime. The JavaScript twin of hebbedge/export/edge.py (`EdgeModel`): same checks, same
// messages, same results to float32 rounding.
//
// Nothing here touches a file system or imports a runtime: the caller passes the `ort` module
// (onnxruntime-node, or onnxruntime-web in a page), a store that reads the directory's files and
// replaces its state atomically, and optionally a sha256 function. node.mjs is the Node layer.

export const FORMAT = 'hebbedge-edge/2';
export const STATE_FORMAT = 'hebbedge-state/1';
export const STATE_FILE = 'state.safetensors';
export const MANIFEST_FILE = 'manifest.json';

/** Bad input or a bad model directory; the message says what was expected. */
export class EdgeError extends Error {
  constructor(message) {
    super(message);
    this.name = 'EdgeError';
  }
}

/** A .safetensors buffer that does not parse; callers prefix the file's name and role. */
class DamagedSafetensors extends EdgeError {}

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  // safetensors and ONNX Runtime's tensors are little-endian; typed arrays use the host's order.
  throw new Error('hebbedge-edge needs a little-endian host');
}

// safetensors dtype -> [numpy's name (the one the Python client's messages use), bytes per element]
const DTYPES = {
  BOOL: ['bool', 1], U8: ['uint8', 1], I8: ['int8', 1], F8_E5M2: ['float8_e5m2', 1], F8_E4M3: ['float8_e4m3', 1],
  U16: ['uint16', 2], I16: ['int16', 2], F16: ['float16', 2], BF16: ['bfloat16', 2],
  U32: ['uint32', 4], I32: ['int32', 4], F32: ['float32', 4], U64: ['uint64', 8], I64: ['int64', 8], F64: ['float64', 8],
};
const TYPED = {
  uint8: Uint8Array, int8: Int8Array, uint16: Uint16Array, int16: Int16Array, uint32: Uint32Array, int32: Int32Array,
  float32: Float32Array, float64: Float64Array, uint64: BigUint64Array, int64: BigInt64Array,
};
const CODE_OF = Object.fromEntries(Object.entries(DTYPES).map(([code, [name]]) => [name, code]));

const numel = (shape) => shape.reduce((a, b) => a * b, 1);
const bytesOf = (data) => new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
const fmtShape = (shape) => `[${shape.join(', ')}]`;

/** Like Python's `{v:g}`: six significant digits, no trailing zeros. */
function g(v) {
  return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(6)));
}

function float16ToFloat32(bits) {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) {
    const h = bits[i], sign = h & 0x8000 ? -1 : 1, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
    out[i] = exp === 0 ? sign * frac * 2 ** -24
      : exp === 31 ? (frac ? NaN : sign * Infinity)
        : sign * (1 + frac / 1024) * 2 ** (exp - 15);
  }
  return out;
}

/** Elements [begin, end) of `bytes` as a typed array: a view when aligned, else a copy. */
function typedArray(Ctor, bytes, begin, end) {
  const offset = bytes.byteOffset + begin, count = (end - begin) / Ctor.BYTES_PER_ELEMENT;
  if (offset % Ctor.BYTES_PER_ELEMENT === 0) return new Ctor(bytes.buffer, offset, count);
  return new Ctor(bytes.slice(begin, end).buffer);
}

/**
 * Parse a .safetensors buffer: {metadata, tensors: {name: {dtype, shape, data}}}, dtype as numpy names it.
 * `data` is a typed array (float16 arrives as float32 values); null for dtypes JavaScript has no array for
 * (bfloat16, float8, bool), which no caller here accepts. Throws DamagedSafetensors for anything the
 * format does not allow, truncation included.
 */
export function parseSafetensors(bytes) {
  if (bytes.byteLength < 8) throw new DamagedSafetensors(`truncated: ${bytes.byteLength} bytes, less than the 8-byte header length`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = view.getBigUint64(0, true);
  if (headerLength > BigInt(bytes.byteLength - 8)) {
    throw new DamagedSafetensors(`truncated: header of ${headerLength} bytes, but ${bytes.byteLength - 8} bytes follow its length`);
  }
  const start = 8 + Number(headerLength);
  let header;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, start)));
  } catch (err) {
    throw new DamagedSafetensors(`header is not JSON (${err.message})`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) throw new DamagedSafetensors('header is not a JSON object');
  const dataLength = bytes.byteLength - start;
  const { __metadata__: metadata = {}, ...entries } = header;
  const tensors = {}, spans = [];
  for (const [name, entry] of Object.entries(entries)) {
    const { dtype, shape, data_offsets: offsets } = entry ?? {};
    if (!(dtype in DTYPES)) throw new DamagedSafetensors(`tensor '${name}' has unknown dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new DamagedSafetensors(`tensor '${name}' has shape ${JSON.stringify(shape)}; expected a list of sizes`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(Number.isSafeInteger) || offsets[0] < 0 || offsets[1] < offsets[0]) {
      throw new DamagedSafetensors(`tensor '${name}' has data_offsets ${JSON.stringify(offsets)}`);
    }
    const [begin, end] = offsets, [dtypeName, size] = DTYPES[dtype];
    if (end - begin !== numel(shape) * size) {
      throw new DamagedSafetensors(`tensor '${name}' (${dtypeName} ${fmtShape(shape)}) needs ${numel(shape) * size} bytes, its offsets span ${end - begin}`);
    }
    if (end > dataLength) throw new DamagedSafetensors(`truncated: tensor '${name}' ends at data byte ${end}, but the file holds ${dataLength}`);
    spans.push([begin, end, name]);
    const at = (Ctor) => typedArray(Ctor, bytes, start + begin, start + end);
    const data = dtype === 'F16' ? float16ToFloat32(at(Uint16Array)) : TYPED[dtypeName] ? at(TYPED[dtypeName]) : null;
    tensors[name] = { dtype: dtypeName, shape, data };
  }
  // The format packs the tensors without gaps or overlaps; anything else is a damaged or foreign file.
  spans.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let covered = 0;
  for (const [begin, end, name] of spans) {
    if (begin !== covered) throw new DamagedSafetensors(`tensor '${name}' starts at data byte ${begin}, expected ${covered}`);
    covered = end;
  }
  if (covered !== dataLength) throw new DamagedSafetensors(`${dataLength - covered} bytes after the last tensor`);
  if (metadata === null || typeof metadata !== 'object' || !Object.values(metadata).every((v) => typeof v === 'string')) {
    throw new DamagedSafetensors('__metadata__ is not a map of strings');
  }
  return { metadata, tensors };
}

/**
 * A .safetensors buffer of `tensors` ({name: {dtype, shape, data}}, dtype as numpy names it; not
 * float16) and string `metadata`. Keys sorted, data in name order; the header is padded with spaces
 * to 8 bytes so that a reader can view the data in place.
 */
export function encodeSafetensors(tensors, metadata) {
  const header = {}, names = Object.keys(tensors).sort();
  let offset = 0;
  for (const name of names) {
    const { dtype, shape, data } = tensors[name];
    const code = CODE_OF[dtype];
    if (!TYPED[dtype] || !(data instanceof TYPED[dtype]) || data.length !== numel(shape)) {
      throw new EdgeError(`tensor '${name}': expected ${numel(shape)} ${dtype} values for shape ${fmtShape(shape)}`);
    }
    header[name] = { dtype: code, shape, data_offsets: [offset, offset + data.byteLength] };
    offset += data.byteLength;
  }
  if (metadata) header.__metadata__ = metadata;
  const sorted = Object.fromEntries(Object.keys(header).sort().map((k) => [k, header[k]]));
  const json = new TextEncoder().encode(JSON.stringify(sorted));
  const padded = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + padded + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.fill(0x20, 8, 8 + padded);
  out.set(json, 8);
  let at = 8 + padded;
  for (const name of names) {
    out.set(bytesOf(tensors[name].data), at);
    at += tensors[name].data.byteLength;
  }
  return out;
}

/** sha256 of the concatenated chunks, in hex, with Web Crypto (Node >= 19, browsers). */
export async function webSha256(chunks) {
  const whole = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let at = 0;
  for (const c of chunks) {
    whole.set(c, at);
    at += c.byteLength;
  }
  const digest = new Uint8Array(await globalThis.crypto.subtle.digest('SHA-256', whole));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** `tensors_digest` of hebbedge/export/edge.py, for float32 tensors ({name: {shape, data}}). */
export async function tensorsDigest(tensors, sha256 = webSha256) {
  const encoder = new TextEncoder(), chunks = [];
  for (const name of Object.keys(tensors).sort()) {
    const { shape, data } = tensors[name];
    chunks.push(encoder.encode(`${name}|<f4|${shape.join(',')}|`), bytesOf(data));
  }
  return sha256(chunks);
}

/**
 * Images (`x`) and, when present, labels (`y`) from a data file's bytes, like `load_arrays` in
 * edge.py; `path` names the file in messages.
 */
export function dataArrays(bytes, path) {
  let tensors;
  try {
    ({ tensors } = parseSafetensors(bytes));
  } catch (err) {
    if (err instanceof DamagedSafetensors) throw new EdgeError(`${path}: not a readable .safetensors file (${err.message})`);
    throw err;
  }
  if (!('x' in tensors)) {
    throw new EdgeError(`${path}: expected arrays 'x' (images) and optionally 'y' (labels); has [${Object.keys(tensors).sort().map((k) => `'${k}'`).join(', ')}]`);
  }
  const { x, y = null } = tensors;
  if (y !== null && y.shape[0] !== x.shape[0]) {
    throw new EdgeError(`${path}: ${x.shape[0] ?? 0} images but ${y.shape[0] ?? 0} labels; expected one label per image`);
  }
  return { x, y };
}

/**
 * Validated images: float32 [N, C, H, W] in [0, 1], converted a batch at a time (a uint8 file stays
 * uint8 in memory). `x` is {dtype, shape, data}: uint8 0..255, or float 0..1; [C, H, W] is one image,
 * [N, H, W] is accepted for one channel.
 */
export function images(x, inputShape) {
  if (x.data && x.data.length !== numel(x.shape)) {
    throw new EdgeError(`images: shape ${fmtShape(x.shape)} needs ${numel(x.shape)} values, got ${x.data.length}`);
  }
  let values = x.data;
  const floats = ['float16', 'float32', 'float64'].includes(x.dtype);
  if (floats) {
    if (!(values instanceof Float32Array)) values = Float32Array.from(values);
    let lo = Infinity, hi = -Infinity;
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (v - v !== 0) throw new EdgeError('images contain NaN or Inf');
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    if (values.length && (lo < 0 || hi > 1)) {
      throw new EdgeError(`float images must be in [0, 1] (got [${g(lo)}, ${g(hi)}]); images in 0..255 go as uint8`);
    }
  } else if (x.dtype !== 'uint8') {
    throw new EdgeError(`images must be uint8 (0..255) or float (0..1), got dtype ${x.dtype}`);
  }
  const [c, h, w] = inputShape, s = x.shape;
  let shape = s;
  if (s.length === 3 && s[0] === c && s[1] === h && s[2] === w) shape = [1, ...s];
  else if (c === 1 && s.length === 3 && s[1] === h && s[2] === w) shape = [s[0], 1, h, w];
  if (shape.length !== 4 || shape[1] !== c || shape[2] !== h || shape[3] !== w) {
    throw new EdgeError(`images must have shape [N, ${c}, ${h}, ${w}] (${c} channel(s) of ${h}x${w}); got ${fmtShape(s)}`);
  }
  const size = c * h * w;
  return {
    n: shape[0],
    shape,
    /** Images [begin, end) as float32 in [0, 1]. */
    batch(begin, end) {
      if (floats) return values.subarray(begin * size, end * size);
      const out = new Float32Array((end - begin) * size), src = values.subarray(begin * size, end * size);
      for (let i = 0; i < out.length; i++) out[i] = src[i] / 255;
      return out;
    },
  };
}

/** Validated labels as int64: `n` integers in [0, classes), like `labels` in edge.py. */
export function labels(y, n, classes) {
  const data = y.data, integer = /^u?int/.test(y.dtype);
  let lo = null, hi = null;
  if (data && data.length && (integer || y.dtype.startsWith('float'))) {
    lo = data[0];
    hi = data[0];
    for (const v of data) {
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
  }
  const ok = y.shape.length === 1 && y.shape[0] === n && data?.length === n && integer && (n === 0 || (lo >= 0 && hi < classes));
  if (!ok) {
    const range = lo === null ? 'none' : `[${lo}, ${hi}]`;
    throw new EdgeError(`labels must be ${n} integers in [0, ${classes}), one per image; got shape ${fmtShape(y.shape)}, dtype ${y.dtype}, range ${range}`);
  }
  return data instanceof BigInt64Array ? data : BigInt64Array.from(data, (v) => BigInt(v));
}

function parseManifest(bytes, path) {
  if (bytes === null) throw new EdgeError(`${path}: missing; expected a model directory written by \`hebbedge export\``);
  let manifest;
  try {
    manifest = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (err) {
    throw new EdgeError(`${path}: not readable JSON (${err.message})`);
  }
  const isObject = manifest !== null && typeof manifest === 'object' && !Array.isArray(manifest);
  if (!isObject || manifest.format !== FORMAT) {
    throw new EdgeError(`${path}: format ${JSON.stringify(isObject ? manifest.format ?? null : null)}; expected ${JSON.stringify(FORMAT)}`);
  }
  for (const key of ['kind', 'input_shape', 'classes', 'graphs', 'files', 'model_id', 'state']) {
    if (!(key in manifest)) throw new EdgeError(`${path}: no '${key}'; expected the manifest that \`hebbedge export\` writes`);
  }
  const shape = manifest.input_shape;
  if (!Array.isArray(shape) || shape.length !== 3 || !shape.every((d) => Number.isSafeInteger(d) && d > 0)) {
    throw new EdgeError(`${path}: input_shape ${JSON.stringify(shape)}; expected [C, H, W]`);
  }
  if (!Array.isArray(manifest.classes) || !Array.isArray(manifest.state) || !manifest.graphs?.predict) {
    throw new EdgeError(`${path}: classes, state or graphs.predict missing or malformed; expected the manifest that \`hebbedge export\` writes`);
  }
  return manifest;
}

/**
 * A model directory, loaded for prediction and, unless opened with `learning: false`, learning.
 *
 * Open it with `EdgeModel.open({ort, store, ...})`. The store is {location: the directory's name in
 * messages, read(name) -> Promise<Uint8Array | null> (null: no such file), writeState(bytes) -> Promise
 * (replace state.safetensors atomically; only `save` needs it)}.
 */
export class EdgeModel {
  /**
   * @param {object} options
   * @param {object} options.ort the onnxruntime-node or onnxruntime-web module
   * @param {object} options.store the model directory's files (see the class comment)
   * @param {string} [options.precision] "fp32", or a predict variant the export wrote ("int8", "fp16")
   * @param {boolean} [options.learning] load learn.onnx and refresh.onnx too
   * @param {function} [options.sha256] (chunks: Uint8Array[]) -> hex digest (or a promise of it)
   * @param {object} [options.sessionOptions] passed to ort.InferenceSession.create
   */
  static async open({ ort, store, precision = 'fp32', learning = true, sha256 = webSha256, sessionOptions = {} }) {
    const model = new EdgeModel();
    Object.assign(model, { ort, store, precision, sha256, sessionOptions, dir: store.location });
    const m = parseManifest(await store.read(MANIFEST_FILE), model.path(MANIFEST_FILE));
    model.manifest = m;
    model.inputShape = m.input_shape;
    model.nClasses = m.classes.length;
    model.graphs = m.graphs;
    const variants = m.variants ?? {};
    if (precision !== 'fp32' && !(precision in variants)) {
      throw new EdgeError(`${model.dir}: no ${precision} variant; this export has ${['fp32', ...Object.keys(variants)].join(', ')} (export with --${precision})`);
    }
    model.sessions = {};
    try {
      model.sessions.predict = await model.#openGraph(precision === 'fp32' ? m.graphs.predict.file : variants[precision].file);
      if (learning) {
        for (const graph of ['learn', 'refresh']) {
          if (m.graphs[graph]) model.sessions[graph] = await model.#openGraph(m.graphs[graph].file);
        }
      }
      model.state = m.state.length ? await model.#readState() : {};
    } catch (err) {
      await model.close();
      throw err;
    }
    model.learning = learning;
    return model;
  }

  /** A file of the directory, as messages name it. */
  path(name) {
    return `${this.dir.replace(/\/+$/, '')}/${name}`;
  }

  async #openGraph(file) {
    const path = this.path(file), bytes = await this.store.read(file);
    if (bytes === null) throw new EdgeError(`${path}: missing; the manifest lists it`);
    if ((await this.sha256([bytes])) !== this.manifest.files[file]) {
      throw new EdgeError(`${path}: checksum differs from manifest.json; the directory is damaged or half-written`);
    }
    try {
      // From the checked bytes, not the path: what runs is what was checked.
      return { file, session: await this.ort.InferenceSession.create(bytes, this.sessionOptions) };
    } catch (err) {
      throw new EdgeError(`onnxruntime cannot load ${path}: ${runtimeMessage(err)}`);
    }
  }

  async #readState() {
    const path = this.path(STATE_FILE), bytes = await this.store.read(STATE_FILE);
    if (bytes === null) throw new EdgeError(`${path}: missing; expected the state file that \`hebbedge export\` writes`);
    return this.#checkedState(bytes, path);
  }

  /**
   * Replace the state with the state.safetensors file in `bytes` (one that `stateBytes` wrote, kept
   * elsewhere: a page's storage, a download), after the checks `open` makes: format, this model's
   * id, checksum, float32, every tensor the manifest names. `path` names the file in messages.
   */
  async loadState(bytes, path) {
    this.state = await this.#checkedState(bytes, path);
  }

  async #checkedState(bytes, path) {
    const id = this.manifest.model_id;
    let parsed;
    try {
      parsed = parseSafetensors(bytes);
    } catch (err) {
      if (err instanceof DamagedSafetensors) throw new EdgeError(`${path}: not a readable safetensors state (${err.message})`);
      throw err;
    }
    const { metadata, tensors } = parsed;
    if (metadata.format !== STATE_FORMAT) {
      throw new EdgeError(`${path}: format ${JSON.stringify(metadata.format ?? null)}; expected ${JSON.stringify(STATE_FORMAT)}`);
    }
    if (metadata.model_id !== id) {
      throw new EdgeError(`${path}: state of another model (${(metadata.model_id ?? '?').slice(0, 12)}); this directory's model is ${id.slice(0, 12)}`);
    }
    for (const [name, t] of Object.entries(tensors)) {
      if (t.dtype !== 'float32') throw new EdgeError(`${path}: tensor '${name}' is ${t.dtype}; the state is float32`);
    }
    if (metadata.sha256 !== (await tensorsDigest(tensors, this.sha256))) {
      throw new EdgeError(`${path}: checksum mismatch; the state file is damaged`);
    }
    for (const name of this.manifest.state) {
      if (!(name in tensors)) throw new EdgeError(`${path}: no tensor '${name}'; expected ${this.manifest.state.join(', ')}`);
    }
    return Object.fromEntries(Object.entries(tensors).map(([name, t]) => [name, { shape: t.shape, data: t.data }]));
  }

  /** Release the ONNX Runtime sessions. */
  async close() {
    for (const { session } of Object.values(this.sessions ?? {})) await session.release();
    this.sessions = {};
  }

  get canLearn() {
    return 'learn' in this.sessions;
  }

  /** Throws unless `learn` can run: the export learns and the model was opened for learning. */
  checkLearns() {
    if (!this.learning) throw new EdgeError(`${this.dir}: opened for prediction only; open it with learning to learn`);
    if (!this.canLearn) {
      throw new EdgeError(`${this.dir}: this export does not learn (no learn.onnx); export a frozen-C Hebbian run `
        + '(or pass --freeze-c) or an LDA readout run');
    }
  }

  /** Validated images (see `images`), for this model's input shape. */
  images(x) {
    return images(x, this.inputShape);
  }

  labels(y, n) {
    return labels(y, n, this.nClasses);
  }

  #stateTensor(name, state = this.state) {
    return new this.ort.Tensor('float32', state[name].data, state[name].shape);
  }

  /**
   * Run `graph` on `feeds`; the outputs in the graph's order, as float32 {shape, data}. A float16
   * output (an fp16 predict variant's logits) is widened exactly; any other type is refused, and so
   * is anything but float32 from the graphs that write the state.
   */
  async #run(graph, feeds) {
    const { file, session } = this.sessions[graph];
    let results;
    try {
      results = await session.run(feeds);
    } catch (err) {
      throw new EdgeError(`onnxruntime failed running ${file}: ${runtimeMessage(err)}`);
    }
    return session.outputNames.map((name) => {
      const { type, dims, data } = results[name];
      if (type === 'float32') return { shape: dims.slice(), data };
      if (type === 'float16' && graph === 'predict') {
        // onnxruntime-node hands float16 over as its bits; a runtime with Float16Array, as numbers.
        return { shape: dims.slice(), data: data instanceof Uint16Array ? float16ToFloat32(data) : Float32Array.from(data) };
      }
      throw new EdgeError(`${this.path(file)}: output '${name}' is ${type}; expected float32`);
    });
  }

  /** Logits {shape: [N, classes], data: Float32Array} of images `x` ({dtype, shape, data}). */
  async logits(x, batchSize = 256) {
    const imgs = this.images(x);
    if (!imgs.n) throw new EdgeError('no images to predict');
    const [c, h, w] = this.inputShape;
    const feeds = {};
    for (const name of this.graphs.predict.inputs) if (name in this.state) feeds[name] = this.#stateTensor(name);
    const out = new Float32Array(imgs.n * this.nClasses);
    for (let i = 0; i < imgs.n; i += batchSize) {
      const end = Math.min(i + batchSize, imgs.n);
      feeds.images = new this.ort.Tensor('float32', imgs.batch(i, end), [end - i, c, h, w]);
      const [logits] = await this.#run('predict', feeds);
      if (logits.shape.length !== 2 || logits.shape[0] !== end - i || logits.shape[1] !== this.nClasses) {
        throw new EdgeError(`${this.path(this.sessions.predict.file)}: logits ${fmtShape(logits.shape)}; the manifest has ${this.nClasses} classes`);
      }
      out.set(logits.data, i * this.nClasses);
    }
    return { shape: [imgs.n, this.nClasses], data: out };
  }

  /** The predicted class index of every image. */
  async predict(x) {
    return argmax(await this.logits(x));
  }

  /** The fraction of images whose predicted class is their label. */
  async accuracy(x, y) {
    const truth = this.labels(y, this.images(x).n);
    return accuracyOf(await this.logits(x), truth);
  }

  /**
   * One pass of on-device learning over (x, y) in order, then (unless `refresh: false`) the
   * classifier's refresh; returns the number of steps. A last batch smaller than the learner's
   * minimum is skipped. Nothing is kept unless every step succeeds; nothing is saved until `save`.
   */
  async learn(x, y, { batchSize = 64, refresh = true } = {}) {
    this.checkLearns();
    const spec = this.graphs.learn, smallest = spec.min_batch;
    if (!Number.isInteger(batchSize) || batchSize < smallest) {
      throw new EdgeError(`batch size must be at least ${smallest} for this learner, got ${batchSize}`);
    }
    const imgs = this.images(x), truth = this.labels(y, imgs.n);
    if (imgs.n < smallest) throw new EdgeError(`need at least ${smallest} labelled images to learn from, got ${imgs.n}`);
    const [c, h, w] = this.inputShape;
    let state = { ...this.state }, steps = 0;
    for (let i = 0; i < imgs.n; i += batchSize) {
      const end = Math.min(i + batchSize, imgs.n);
      if (end - i < smallest) continue;
      const feeds = {
        images: new this.ort.Tensor('float32', imgs.batch(i, end), [end - i, c, h, w]),
        labels: new this.ort.Tensor('int64', truth.subarray(i, end), [end - i]),
      };
      for (const name of spec.inputs) if (name in state) feeds[name] = this.#stateTensor(name, state);
      const outs = this.#named('learn', await this.#run('learn', feeds));
      if (!allFinite(outs)) {
        throw new EdgeError(`the learning step produced non-finite state at batch ${i / batchSize}; nothing was kept`);
      }
      state = { ...state, ...outs };
      steps++;
    }
    this.state = refresh ? await this.#refreshed(state) : state;
    return steps;
  }

  /** The graph's outputs under the state names the manifest gives them (in graph-output order). */
  #named(graph, outs) {
    const names = this.graphs[graph].outputs;
    if (outs.length !== names.length) {
      throw new EdgeError(`${this.path(this.graphs[graph].file)}: ${outs.length} outputs, but the manifest names ${names.length}`);
    }
    return Object.fromEntries(names.map((name, i) => [name, outs[i]]));
  }

  async #refreshed(state) {
    if (!('refresh' in this.sessions)) return state;
    const feeds = {};
    for (const name of this.graphs.refresh.inputs) feeds[name] = this.#stateTensor(name, state);
    const outs = this.#named('refresh', await this.#run('refresh', feeds));
    if (!allFinite(outs)) throw new EdgeError('the classifier refresh produced non-finite values; nothing was kept');
    return { ...state, ...outs };
  }

  /** Solve the classifier again from the learned state (`learn` does it after its pass unless told not to). */
  async refresh() {
    this.checkLearns();
    this.state = await this.#refreshed(this.state);
  }

  /** The state as a state.safetensors file: float32 tensors, model id and checksum. */
  async stateBytes() {
    const tensors = Object.fromEntries(Object.entries(this.state).map(([name, { shape, data }]) => [name, { dtype: 'float32', shape, data }]));
    const digest = await tensorsDigest(this.state, this.sha256);
    return encodeSafetensors(tensors, { format: STATE_FORMAT, model_id: this.manifest.model_id, sha256: digest });
  }

  /** Write the state through the store (atomically): the one commit point of on-device learning. */
  async save() {
    if (Object.keys(this.state).length) await this.store.writeState(await this.stateBytes());
  }
}

/** The index of each row's largest logit (the first, on ties). */
export function argmax({ shape: [n, k], data }) {
  const classes = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let j = 1; j < k; j++) if (data[i * k + j] > data[i * k + best]) best = j;
    classes[i] = best;
  }
  return classes;
}

/** The fraction of rows of `logits` whose largest entry is at the label (`truth`, int64 as `labels` returns). */
export function accuracyOf(logits, truth) {
  const pred = argmax(logits);
  let right = 0;
  for (let i = 0; i < pred.length; i++) if (BigInt(pred[i]) === truth[i]) right++;
  return right / pred.length;
}

/** ONNX Runtime's message without the C++ source location and signature it starts with, on one line. */
function runtimeMessage(err) {
  return String(err?.message ?? err).replace(/\S+\.(cc|h):\d+ [^(]*\([^)]*\)\s*/g, '').replace(/\s+/g, ' ').trim().slice(0, 300);
}

function allFinite(tensors) {
  for (const { data } of Object.values(tensors)) {
    for (let i = 0; i < data.length; i++) if (data[i] - data[i] !== 0) return false;
  }
  return true;
}
