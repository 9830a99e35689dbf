// The Node layer of the edge client: a model directory on disk as the store of hebbedge-edge.mjs,
// sha256 by node:crypto, data files, and onnxruntime-node. A browser page supplies the same three
// things (store, hasher, ort) from fetch, IndexedDB and onnxruntime-web.

import { createHash, randomBytes } from 'node:crypto';
import { open, readFile, readdir, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

import * as ort from 'onnxruntime-node';

import { EdgeError, EdgeModel, STATE_FILE, dataArrays, encodeSafetensors } from './hebbedge-edge.mjs';

/** sha256 of the chunks in hex, without concatenating them. */
export function nodeSha256(chunks) {
  const hash = createHash('sha256');
  for (const chunk of chunks) hash.update(chunk);
  return hash.digest('hex');
}

/** The bytes of `path`, or null when there is no such file. */
async function readOrNull(path) {
  try {
    return await readFile(path);
  } catch (err) {
    if (err.code === 'ENOENT') return null;
    throw new EdgeError(`${path}: cannot read (${err.code ?? err.message})`);
  }
}

const ORPHAN = new RegExp(`^\\.${STATE_FILE.replace(/\./g, '\\.')}\\.[0-9a-f]+\\.tmp$`);

/**
 * Write `bytes` to `path` so that a reader sees the old file or the new one, never a mix, and a
 * crash leaves the old one: a temporary file beside it (the name hebbedge.files.atomic_write uses),
 * fsync, rename, fsync of the directory so that the rename itself is durable.
 */
export async function writeAtomic(path, bytes) {
  let tmp, handle;
  for (;;) {
    tmp = join(dirname(path), `.${basename(path)}.${randomBytes(4).toString('hex')}.tmp`);
    try {
      handle = await open(tmp, 'wx', 0o666);
      break;
    } catch (err) {
      if (err.code !== 'EEXIST') throw new EdgeError(`${path}: cannot write (${err.code ?? err.message}); the old file is kept`);
    }
  }
  try {
    try {
      await handle.writeFile(bytes);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw new EdgeError(`${path}: cannot write (${err.code ?? err.message}); the old file is kept`);
  }
  try {
    const dir = await open(dirname(path), 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  } catch (err) {
    // Windows opens no directories; there the rename is as durable as the file system makes it.
    if (!['EISDIR', 'EPERM', 'EACCES', 'EINVAL'].includes(err.code)) {
      throw new EdgeError(`${path}: written, but the fsync of its directory failed (${err.code ?? err.message})`);
    }
  }
}

/** A model directory on disk as the store of EdgeModel. */
export function directoryStore(dir) {
  return {
    location: dir,
    read: (name) => readOrNull(join(dir, name)),
    writeState: (bytes) => writeAtomic(join(dir, STATE_FILE), bytes),
  };
}

/** Remove the temporary state files that a writer killed before its rename left behind. */
export async function removeOrphans(dir) {
  let names;
  try {
    names = await readdir(dir);
  } catch (err) {
    if (err.code === 'ENOENT') return;  // EdgeModel.open reports the missing directory
    throw new EdgeError(`${dir}: cannot list (${err.code ?? err.message})`);
  }
  for (const name of names.filter((n) => ORPHAN.test(n))) {
    await unlink(join(dir, name)).catch((err) => {
      if (err.code !== 'ENOENT') throw new EdgeError(`${join(dir, name)}: cannot remove the orphan temporary file (${err.code})`);
    });
  }
}

/** EdgeModel.open for a directory on disk, with onnxruntime-node; see EdgeModel.open for the options. */
export async function openModel(dir, { precision = 'fp32', learning = true, sessionOptions } = {}) {
  if (learning) await removeOrphans(dir);
  return EdgeModel.open({ ort, store: directoryStore(dir), precision, learning, sha256: nodeSha256, sessionOptions });
}

/** Images `x` and labels `y` (or null) of a .safetensors data file. */
export async function readArrays(path) {
  if (!path.endsWith('.safetensors')) throw new EdgeError(`${path}: expected a .safetensors file with images 'x' and optionally labels 'y'`);
  const bytes = await readOrNull(path);
  if (bytes === null) throw new EdgeError(`${path}: no such file`);
  return dataArrays(bytes, path);
}

/** float32 tensors ({name: {shape, data}}) as a .safetensors file, atomically. */
export async function writeTensors(path, tensors, metadata) {
  const typed = Object.fromEntries(Object.entries(tensors).map(([k, t]) => [k, { dtype: 'float32', ...t }]));
  await writeAtomic(path, encodeSafetensors(typed, metadata));
}

export { ort };
