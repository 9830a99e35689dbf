// The page of `hebbedge edge serve`: a person draws or drops digits, sees what the model predicts,
// teaches it classes from a few examples, and watches the accuracy matrix on a test subset change.
// The learning cycle is the JS client's (hebbedge-edge.mjs) on ONNX Runtime Web's wasm backend;
// the learned state lives in this browser (IndexedDB, keyed by the model id). No request leaves
// the server that sent the page.

import * as ort from '../js/node_modules/onnxruntime-web/dist/ort.wasm.min.mjs';
import { EdgeError, EdgeModel, STATE_FILE, argmax, dataArrays } from '../js/hebbedge-edge.mjs';

// The wasm files from the same server; one thread, so the page needs no cross-origin isolation.
ort.env.wasm.wasmPaths = new URL('../js/node_modules/onnxruntime-web/dist/', import.meta.url).href;
ort.env.wasm.numThreads = 1;

const params = new URLSearchParams(location.search);
const MODEL_URL = new URL((params.get('model') ?? '../model/').replace(/\/*$/, '/'), location.href);
const TEST_URL = new URL(params.get('test') ?? '../test-data.safetensors', location.href);
const BATCH = 64;  // images per learning step, the default of `hebbedge edge adapt`

const $ = (id) => document.getElementById(id);
let model = null;
let test = null;        // {x, y: int64 labels, classes: the labels present, sorted}
let drawing = null;     // the pad's downsampled image, once something is drawn
const gallery = [];     // {name, image, figure}: images predicted from files
const pending = [];     // {image, label}: examples waiting for Teach, in the order added

/** GET `url`'s bytes; null when the server has no such file. */
async function fetchBytes(url) {
  let response;
  try {
    response = await fetch(url, { cache: 'no-store' });
  } catch (err) {
    throw new EdgeError(`${url}: cannot fetch (${err.message}); is \`hebbedge edge serve\` still running?`);
  }
  if (response.status === 404) return null;
  if (!response.ok) throw new EdgeError(`${url}: the server answered ${response.status} ${response.statusText}`);
  return new Uint8Array(await response.arrayBuffer());
}

// ---- the browser's storage: state.safetensors bytes under the model id

function storage(mode, use) {
  return new Promise((resolve, reject) => {
    const opening = indexedDB.open('hebbedge-edge', 1);
    opening.onupgradeneeded = () => opening.result.createObjectStore('states');
    opening.onerror = () => reject(new EdgeError(`this browser's storage cannot be opened (${opening.error?.message})`));
    opening.onsuccess = () => {
      const db = opening.result, tx = db.transaction('states', mode), request = use(tx.objectStore('states'));
      tx.oncomplete = () => { db.close(); resolve(request.result); };
      tx.onerror = tx.onabort = () => { db.close(); reject(new EdgeError(`this browser's storage: ${tx.error?.message}`)); };
    };
  });
}

/** The model directory over HTTP as the JS client's store; `save` writes to the browser's storage. */
const store = {
  location: MODEL_URL.href,
  read: (name) => fetchBytes(new URL(name, MODEL_URL)),
  writeState: (bytes) => storage('readwrite', (s) => s.put({ state: bytes, saved: new Date().toISOString() }, model.manifest.model_id)),
};

// ---- images: files and the drawing pad as uint8 [C, H, W]

/** An image's RGBA pixels as uint8 [C, H, W]: gray (ITU-R 601 luma, as Pillow's "L") for one
 * channel, else RGB; transparent pixels count as black, the background of MNIST's digits. */
function fromRGBA(rgba, channels, pixels) {
  if (channels !== 1 && channels !== 3) throw new EdgeError(`this model takes ${channels} channels; a page reads gray or RGB images`);
  const out = new Uint8Array(channels * pixels);
  for (let i = 0; i < pixels; i++) {
    const [r, g, b, a] = rgba.subarray(4 * i, 4 * i + 4);
    const over = (v) => (a === 255 ? v : Math.round((v * a) / 255));
    if (channels === 1) out[i] = over(r === g && g === b ? r : (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16);
    else [r, g, b].forEach((v, c) => { out[c * pixels + i] = over(v); });
  }
  return out;
}

async function fileImage(file) {
  const [c, h, w] = model.inputShape;
  let bitmap;
  try {
    // No colour management or premultiplication: the pixels are the file's, as Pillow reads them.
    bitmap = await createImageBitmap(file, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  } catch {
    throw new EdgeError(`${file.name}: not an image this browser can read; nothing was added`);
  }
  const { width, height } = bitmap;
  if (width !== w || height !== h) {
    bitmap.close();
    throw new EdgeError(`${file.name}: ${width}×${height} pixels, but this model takes ${w}×${h} images; nothing was added`);
  }
  const context = new OffscreenCanvas(w, h).getContext('2d', { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  bitmap.close();
  return fromRGBA(context.getImageData(0, 0, w, h).data, c, h * w);
}

/** Images as the JS client takes them: uint8 {dtype, shape, data} [N, C, H, W]. */
function batch(list) {
  const [c, h, w] = model.inputShape, size = c * h * w, data = new Uint8Array(list.length * size);
  list.forEach((image, i) => data.set(image, i * size));
  return { dtype: 'uint8', shape: [list.length, c, h, w], data };
}

function paint(canvas, image) {
  const [c, h, w] = model.inputShape, pixels = h * w, rgba = new ImageData(w, h);
  for (let i = 0; i < pixels; i++) {
    for (let k = 0; k < 3; k++) rgba.data[4 * i + k] = image[(c === 1 ? 0 : k) * pixels + i];
    rgba.data[4 * i + 3] = 255;
  }
  canvas.width = w;
  canvas.height = h;
  canvas.getContext('2d').putImageData(rgba, 0, 0);
}

// ---- what the page shows

function setStatus(text) {
  $('status').textContent = text;
}

function showError(err) {
  // An EdgeError says what was expected; anything else is a fault of the page or the browser.
  $('error').textContent = err instanceof EdgeError ? err.message : `Unexpected error: ${err?.message ?? err}`;
  $('error').hidden = false;
}

/** Run `work` with the controls disabled; its error is shown in plain words and nothing else changes. */
async function act(busy, work) {
  $('controls').disabled = true;
  document.body.dataset.state = 'busy';
  $('error').hidden = true;
  setStatus(busy);
  try {
    setStatus(await work());
  } catch (err) {
    showError(err);
    setStatus('Nothing was changed.');
  } finally {
    $('controls').disabled = false;
    document.body.dataset.state = 'ready';
  }
}

const className = (k) => String(model.manifest.classes[k]);

/** An element holding `text` as text: class names and file names never become markup. */
function element(tag, text = '') {
  const e = document.createElement(tag);
  e.textContent = text;
  return e;
}

function softmax(row) {
  const top = Math.max(...row), e = row.map((v) => Math.exp(v - top)), sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
}

function showScores(row, source) {
  const k = argmax({ shape: [1, row.length], data: row })[0], p = softmax(Array.from(row));
  $('predicted').textContent = className(k);
  $('predicted').dataset.class = k;
  $('predicted-source').textContent = source;
  $('scores').tBodies[0].replaceChildren(...p.map((v, j) => {
    const tr = element('tr'), bar = element('span');
    bar.className = 'bar';
    bar.style.width = `${(6 * v).toFixed(2)}rem`;
    tr.append(element('td', className(j)), element('td'), element('td', `${(100 * v).toFixed(1)}%`));
    tr.cells[1].append(bar);
    tr.title = `logit ${row[j]}`;
    return tr;
  }));
}

/** Predict the drawing and every gallery image again, with the current state, in one batch. */
async function predictAll() {
  const images = [...(drawing ? [drawing] : []), ...gallery.map((g) => g.image)];
  if (!images.length) return;
  const { shape: [, k], data } = await model.logits(batch(images));
  const rows = images.map((_, i) => data.subarray(i * k, (i + 1) * k)), classes = argmax({ shape: [images.length, k], data });
  gallery.forEach((g, i) => {
    const at = i + (drawing ? 1 : 0);
    g.figure.dataset.class = classes[at];
    g.figure.dataset.logits = JSON.stringify(Array.from(rows[at]));
    g.figure.querySelector('figcaption').textContent = `→ ${className(classes[at])}`;
    g.row = rows[at];
  });
  const shown = drawing ? [rows[0], 'your drawing'] : [gallery.at(-1).row, gallery.at(-1).name];
  showScores(...shown);
}

function learnedClasses() {
  const count = model.state.count?.data;  // LDA readouts keep a count per class; Hebbian learners none
  return count ? model.manifest.classes.filter((_, k) => count[k] > 0) : null;
}

function showClasses() {
  const learned = learnedClasses(), select = $('class'), chosen = select.value;
  select.replaceChildren(...model.manifest.classes.map((name, k) => new Option(
    `${name}${learned?.includes(name) ? ' (learned)' : ''}`, k)));
  if (chosen) select.value = chosen;
  $('model-line').textContent = `Model ${model.manifest.model_id.slice(0, 12)} (${model.manifest.kind}), from ${MODEL_URL.href}: `
    + `${model.nClasses} classes${learned ? `, learned so far: ${learned.join(', ') || 'none'}` : ''}. `
    + 'Nothing you draw or drop leaves this browser.';
}

function showPending() {
  const counts = new Map();
  for (const { label } of pending) counts.set(label, (counts.get(label) ?? 0) + 1);
  $('pending').textContent = pending.length
    ? `Waiting to be taught: ${[...counts].map(([k, n]) => `${n} of class ${className(k)}`).join(', ')}.`
    : 'No examples yet.';
}

// ---- the accuracy matrix: one row per state of the model, one column per class of the test subset

async function loadTest() {
  const bytes = await fetchBytes(TEST_URL);
  if (bytes === null) {
    $('matrix-note').textContent = 'No test subset: start `hebbedge edge serve DIR --test-data FILE.safetensors` to see one.';
    return;
  }
  const { x, y } = dataArrays(bytes, TEST_URL.href);
  if (y === null) throw new EdgeError(`${TEST_URL.href}: the test subset needs labels (array 'y')`);
  const labels = model.labels(y, model.images(x).n);
  test = { x, y: labels, classes: [...new Set(Array.from(labels, Number))].sort((a, b) => a - b) };
  $('matrix-note').textContent = `${labels.length} labelled images; each row is the model after one change, each cell the share of that class's images predicted right.`;
  const head = element('tr');
  head.append(element('th', 'model'), ...[...test.classes.map(className), 'all'].map((name) => element('th', name)));
  $('matrix').tHead.replaceChildren(head);
}

/** Add a row `label` for the current state. */
async function addMatrixRow(label) {
  if (!test) return;
  const predicted = argmax(await model.logits(test.x)), right = new Map(), total = new Map();
  for (let i = 0; i < predicted.length; i++) {
    const k = Number(test.y[i]);
    total.set(k, (total.get(k) ?? 0) + 1);
    if (predicted[i] === k) right.set(k, (right.get(k) ?? 0) + 1);
  }
  const cell = (r, n) => {
    const td = element('td', (100 * r / n).toFixed(1));
    Object.assign(td.dataset, { correct: r, total: n });
    td.title = `${r} of ${n}`;
    return td;
  };
  const tr = element('tr');
  tr.append(element('th', label), ...test.classes.map((k) => cell(right.get(k) ?? 0, total.get(k))),
    cell([...right.values()].reduce((a, b) => a + b, 0), predicted.length));
  $('matrix').tBodies[0].append(tr);
}

/** After the state changed: classes, predictions, and a matrix row (a fresh matrix when `restart`). */
async function stateChanged(label, { restart = false } = {}) {
  if (restart) $('matrix').tBodies[0].replaceChildren();
  showClasses();
  await predictAll();
  await addMatrixRow(label);
}

// ---- the controls

async function addExamples(files) {
  const label = Number($('class').value), images = [];
  for (const file of files) images.push(await fileImage(file));  // all checked before any is added
  for (const image of images) pending.push({ image, label });
  showPending();
  return `Added ${images.length} example${images.length === 1 ? '' : 's'} of class ${className(label)}; Teach learns from them.`;
}

async function predictFiles(files) {
  const added = [];
  for (const file of files) added.push({ name: file.name, image: await fileImage(file) });
  for (const g of added) {
    g.figure = document.createElement('figure');
    g.figure.innerHTML = '<canvas></canvas><figcaption></figcaption>';
    g.figure.title = g.name;
    paint(g.figure.querySelector('canvas'), g.image);
    g.figure.addEventListener('click', () => showScores(g.row, g.name));
    $('predictions').append(g.figure);
    gallery.push(g);
  }
  drawing = null;  // the scores shown are the last file's
  await predictAll();
  return `Predicted ${added.length} image${added.length === 1 ? '' : 's'}; click one to see its scores.`;
}

async function teach() {
  if (!pending.length) throw new EdgeError('no examples to learn from: pick a class, then add the drawing or images');
  const taught = [...new Set(pending.map((p) => className(p.label)))].join(', '), n = pending.length;
  const y = { dtype: 'int64', shape: [n], data: BigInt64Array.from(pending, (p) => BigInt(p.label)) };
  const start = performance.now();
  const steps = await model.learn(batch(pending.map((p) => p.image)), y, { batchSize: BATCH });
  const ms = performance.now() - start;
  pending.length = 0;
  showPending();
  await stateChanged(`taught ${taught} (${n} examples)`);
  return `Learned class ${taught} from ${n} example${n === 1 ? '' : 's'} in ${ms.toFixed(1)} ms `
    + `(${steps} learning step${steps === 1 ? '' : 's'}${model.graphs.refresh ? ' and the classifier refresh' : ''}). `
    + 'Save keeps it in this browser.';
}

function setUpPad() {
  const pad = $('pad'), context = pad.getContext('2d');
  const clear = () => {
    context.fillStyle = '#000';
    context.fillRect(0, 0, pad.width, pad.height);
  };
  clear();
  Object.assign(context, { strokeStyle: '#fff', lineWidth: 22, lineCap: 'round', lineJoin: 'round' });
  let last = null;
  const at = (e) => [e.offsetX * (pad.width / pad.clientWidth), e.offsetY * (pad.height / pad.clientHeight)];
  pad.addEventListener('pointerdown', (e) => {
    if ($('controls').disabled) return;
    pad.setPointerCapture(e.pointerId);
    last = at(e);
  });
  pad.addEventListener('pointermove', (e) => {
    if (!last) return;
    const next = at(e);
    context.beginPath();
    context.moveTo(...last);
    context.lineTo(...next);
    context.stroke();
    last = next;
  });
  pad.addEventListener('pointerup', () => {
    if (!last) return;
    last = null;
    // Downsampled the way the eye sees it: the whole pad, smoothed, to the model's size.
    const [c, h, w] = model.inputShape, small = $('small').getContext('2d', { willReadFrequently: true });
    $('small').width = w;
    $('small').height = h;
    small.imageSmoothingQuality = 'high';
    small.drawImage(pad, 0, 0, w, h);
    drawing = fromRGBA(small.getImageData(0, 0, w, h).data, c, h * w);
    act('Predicting…', async () => {
      await predictAll();
      return 'Your drawing, predicted. Add it as an example of a class with “Add the drawing”.';
    });
  });
  $('clear').addEventListener('click', () => {
    clear();
    $('small').getContext('2d').clearRect(0, 0, $('small').width, $('small').height);
    drawing = null;
  });
}

function onDrop(element, use) {
  element.addEventListener('dragover', (e) => {
    e.preventDefault();
    element.classList.add('dragging');
  });
  element.addEventListener('dragleave', () => element.classList.remove('dragging'));
  element.addEventListener('drop', (e) => {
    e.preventDefault();
    element.classList.remove('dragging');
    if (!$('controls').disabled && e.dataTransfer.files.length) use([...e.dataTransfer.files]);
  });
}

function onFiles(input, busy, use) {
  input.addEventListener('change', () => {
    const files = [...input.files];
    input.value = '';  // choosing the same files again fires again
    if (files.length) act(busy, () => use(files));
  });
}

function wire() {
  setUpPad();
  onFiles($('predict-files'), 'Predicting…', predictFiles);
  onFiles($('teach-files'), 'Reading the examples…', addExamples);
  onDrop($('drop-predict'), (files) => act('Predicting…', () => predictFiles(files)));
  onDrop($('teach'), (files) => act('Reading the examples…', () => addExamples(files)));
  $('add-drawing').addEventListener('click', () => act('Adding…', async () => {
    if (!drawing) throw new EdgeError('nothing drawn yet: draw a digit on the dark square first');
    pending.push({ image: drawing.slice(), label: Number($('class').value) });
    showPending();
    return `Added the drawing as an example of class ${className(Number($('class').value))}.`;
  }));
  $('teach-button').addEventListener('click', () => act('Learning…', teach));
  $('discard').addEventListener('click', () => act('Discarding…', async () => {
    pending.length = 0;
    showPending();
    return 'The examples were discarded; the model is unchanged.';
  }));
  $('save').addEventListener('click', () => act('Saving…', async () => {
    await model.save();
    return `Saved in this browser under model ${model.manifest.model_id.slice(0, 12)}.`;
  }));
  $('load').addEventListener('click', () => act('Loading the saved state…', async () => {
    const record = await storage('readonly', (s) => s.get(model.manifest.model_id));
    if (!record) throw new EdgeError(`nothing saved in this browser for model ${model.manifest.model_id.slice(0, 12)}`);
    await model.loadState(record.state, `this browser's saved state (${record.saved})`);
    await stateChanged(`loaded, saved ${record.saved.slice(0, 19).replace('T', ' ')}`);
    return `Loaded the state saved in this browser at ${record.saved}.`;
  }));
  $('state-file').addEventListener('change', () => {
    const [file] = $('state-file').files;
    $('state-file').value = '';
    if (file) {
      act('Loading the state file…', async () => {
        await model.loadState(new Uint8Array(await file.arrayBuffer()), file.name);
        await stateChanged(`loaded ${file.name}`);
        return `Loaded ${file.name}. Save keeps it in this browser.`;
      });
    }
  });
  $('download').addEventListener('click', () => act('Preparing the file…', async () => {
    const link = document.createElement('a');
    link.href = URL.createObjectURL(new Blob([await model.stateBytes()], { type: 'application/octet-stream' }));
    link.download = STATE_FILE;
    link.click();
    URL.revokeObjectURL(link.href);
    return `${STATE_FILE} downloaded: \`hebbedge edge predict\` and the other runtimes read it beside this model's graphs.`;
  }));
  $('reset').addEventListener('click', () => act('Resetting…', async () => {
    const bytes = await store.read(STATE_FILE);
    if (bytes === null) throw new EdgeError(`${model.path(STATE_FILE)}: missing on the server`);
    await model.loadState(bytes, model.path(STATE_FILE));
    pending.length = 0;
    showPending();
    await stateChanged('exported', { restart: true });
    return 'Back to the exported state (what is saved in this browser stays until you save again).';
  }));
}

async function main() {
  try {
    for (const url of [MODEL_URL, TEST_URL]) {
      if (url.origin !== location.origin) {
        throw new EdgeError(`${url.href}: not on ${location.origin}; the page reads the model and the test subset from the server that sent it, so that nothing leaves the machine`);
      }
    }
    model = await EdgeModel.open({ ort, store });
    await loadTest();
  } catch (err) {
    showError(err);
    setStatus(`The model at ${MODEL_URL.href} could not be opened.`);
    document.body.dataset.state = 'failed';
    return;
  }
  wire();
  await act('Measuring the exported model…', async () => {
    await stateChanged('exported', { restart: true });
    return 'Ready: draw a digit, drop images, or teach a class.';
  });
}

main();
