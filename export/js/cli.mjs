#!/usr/bin/env node
// The edge client's command line: predict, keep learning, and time a model directory of `hebbedge
// export` with onnxruntime-node. Any error prints `error: <message>` and exits with status 2.

import { parseArgs } from 'node:util';

import { EdgeError, accuracyOf } from './hebbedge-edge.mjs';
import { openModel, ort, readArrays, writeTensors } from './node.mjs';

const USAGE = {
  predict: 'node export/js/cli.mjs predict DIR DATA.safetensors [--precision fp32|int8|fp16] [--out LOGITS.safetensors]',
  learn: 'node export/js/cli.mjs learn DIR DATA.safetensors... [--batch-size 64] [--eval TEST.safetensors]...',
  bench: 'node export/js/cli.mjs bench DIR [--repeats 50]',
};

const pct = (a) => `${(100 * a).toFixed(2)}%`;

function positiveInteger(text, option) {
  if (!/^\d+$/.test(text) || Number(text) < 1) throw new EdgeError(`${option} expects a positive integer, got ${JSON.stringify(text)}`);
  return Number(text);
}

function args(command, argv, options, count) {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new EdgeError(`${err.message}; usage: ${USAGE[command]}`);
  }
  const n = parsed.positionals.length;
  if (n < count[0] || n > count[1]) throw new EdgeError(`wrong number of arguments; usage: ${USAGE[command]}`);
  return parsed;
}

async function predict(argv) {
  const { values, positionals: [dir, data] } = args('predict', argv, { precision: { type: 'string', default: 'fp32' }, out: { type: 'string' } }, [2, 2]);
  if (!['fp32', 'int8', 'fp16'].includes(values.precision)) {
    throw new EdgeError(`--precision expects fp32, int8 or fp16, got ${JSON.stringify(values.precision)}`);
  }
  const model = await openModel(dir, { precision: values.precision, learning: false });
  const { x, y } = await readArrays(data);
  const logits = await model.logits(x);
  let line = `${data}: ${logits.shape[0]} predictions`;
  if (y !== null) line += `, accuracy ${pct(accuracyOf(logits, model.labels(y, logits.shape[0])))}`;
  if (values.out) {
    await writeTensors(values.out, { logits }, { model_id: model.manifest.model_id, precision: values.precision });
    line += `; logits ${JSON.stringify(logits.shape)} written to ${values.out}`;
  }
  console.log(line);
  await model.close();
}

async function learn(argv) {
  const { values, positionals: [dir, ...files] } = args(
    'learn', argv, { 'batch-size': { type: 'string', default: '64' }, eval: { type: 'string', multiple: true, default: [] } }, [2, Infinity]);
  const batchSize = positiveInteger(values['batch-size'], '--batch-size');
  const model = await openModel(dir, { learning: true });
  model.checkLearns();
  // Every file is read and checked before the first step: a bad last file fails in milliseconds, not after the pass.
  const train = [];
  for (const path of files) {
    const { x, y } = await readArrays(path);
    if (y === null) throw new EdgeError(`${path}: learning needs labels (array 'y')`);
    const n = model.images(x).n;
    model.labels(y, n);
    train.push({ path, x, y, n });
  }
  const evals = [];
  for (const path of values.eval) {
    const { x, y } = await readArrays(path);
    if (y === null) throw new EdgeError(`${path}: --eval needs labels (array 'y')`);
    evals.push({ path, x, y, before: await model.accuracy(x, y) });
  }
  let steps = 0;
  for (const { path, x, y, n } of train) {
    // One refresh after all the files: the classifier depends on the learned state only, not on how it was reached.
    const done = await model.learn(x, y, { batchSize, refresh: false });
    console.log(`${path}: ${done} learning steps (${n} images, batch size ${batchSize})`);
    steps += done;
  }
  await model.refresh();
  await model.save();  // only once every step and the refresh have succeeded
  console.log(`${steps} learning steps${model.graphs.refresh ? ', classifier refreshed' : ''}; state saved to ${model.path('state.safetensors')}`);
  for (const { path, x, y, before } of evals) console.log(`${path}: accuracy ${pct(before)} -> ${pct(await model.accuracy(x, y))}`);
  await model.close();
}

function median(times) {
  const s = [...times].sort((a, b) => a - b), mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** Median milliseconds of `fn` over `repeats` runs after one untimed run (first-run allocations), as
 * hebbedge/export/latency.py times the Python runtimes; `after` runs untimed after each. */
async function time(fn, repeats, after = () => {}) {
  const times = [];
  for (let i = 0; i <= repeats; i++) {
    const start = performance.now();
    await fn();
    if (i > 0) times.push(performance.now() - start);
    after();
  }
  return median(times);
}

/** Deterministic uint8 images, so that every bench of a model times the same inputs. */
function randomImages(n, [c, h, w]) {
  const data = new Uint8Array(n * c * h * w);
  let s = 12345;
  for (let i = 0; i < data.length; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    data[i] = s >>> 24;
  }
  return { dtype: 'uint8', shape: [n, c, h, w], data };
}

// The keys and repeat counts of `measure_here` in hebbedge/export/latency.py, which reads this output
// (`hebbedge edge check`) into the same table as the Python runtimes.
async function bench(argv) {
  const { values, positionals: [dir] } = args('bench', argv, { repeats: { type: 'string', default: '50' } }, [1, 1]);
  const repeats = positiveInteger(values.repeats, '--repeats');
  const model = await openModel(dir, { learning: true });
  const one = randomImages(1, model.inputShape);
  const result = {
    runtime: 'onnxruntime-node', version: ort.env.versions.node, repeats,
    predict_ms: { fp32: await time(() => model.logits(one), repeats) }, learn_ms: null, refresh_ms: null,
  };
  if (model.canLearn) {
    const x = randomImages(64, model.inputShape);
    const y = { dtype: 'int64', shape: [64], data: BigInt64Array.from({ length: 64 }, (_, i) => BigInt(i % model.nClasses)) };
    // Every timed step starts from the loaded state: the same work each time, and nothing is saved.
    const loaded = model.state, restore = () => { model.state = loaded; };
    result.learn_ms = await time(() => model.learn(x, y, { batchSize: 64, refresh: false }), Math.max(3, Math.floor(repeats / 5)), restore);
    if (model.graphs.refresh) result.refresh_ms = await time(() => model.refresh(), Math.max(3, Math.floor(repeats / 10)), restore);
  }
  await model.close();
  for (const precision of Object.keys(model.manifest.variants ?? {})) {
    const variant = await openModel(dir, { precision, learning: false });
    result.predict_ms[precision] = await time(() => variant.logits(one), repeats);
    await variant.close();
  }
  result.peak_rss_mb = process.resourceUsage().maxRSS / 1024;  // kilobytes -> MiB, as latency.py reports ru_maxrss
  console.log(JSON.stringify(result, null, 2));
}

const COMMANDS = { predict, learn, bench };

async function main(argv) {
  const [command, ...rest] = argv;
  if (['help', '--help', '-h'].includes(command)) {
    console.log(`usage:\n  ${Object.values(USAGE).join('\n  ')}`);
    return;
  }
  if (!Object.hasOwn(COMMANDS, command ?? '')) {
    throw new EdgeError(`${command ? `unknown command ${JSON.stringify(command)}` : 'no command'}; expected predict, learn or bench (--help for usage)`);
  }
  await COMMANDS[command](rest);
}

main(process.argv.slice(2)).catch((err) => {
  process.stderr.write(`error: ${err.message}\n`);
  process.exitCode = 2;
});
