// Parse Flux with @influxdata/flux (Flux's own parser, compiled to WebAssembly).
//
// Reads a JSON array of Flux sources on stdin; writes a JSON array with, per source,
// {"errors": [messages], "strings": [values of every string literal]}. An empty "errors"
// means the parser accepted the source. The package is built for bundlers (it imports its
// .wasm as a module), so this loads the WebAssembly itself and supplies the three imports
// its glue code would.
"use strict";

const fs = require("fs");

const wasmPath = require.resolve("@influxdata/flux/flux_bg.wasm");
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });
const heap = new Array(32).fill(undefined);
heap.push(undefined, null, true, false);
let heapNext = heap.length;
let wasm = null;

function bytes() {
  return new Uint8Array(wasm.memory.buffer);
}

function keep(value) {
  if (heapNext === heap.length) heap.push(heap.length + 1);
  const index = heapNext;
  heapNext = heap[index];
  heap[index] = value;
  return index;
}

function take(index) {
  const value = heap[index];
  if (index >= 36) {
    heap[index] = heapNext;
    heapNext = index;
  }
  return value;
}

function pass(text) {
  const data = encoder.encode(text);
  const ptr = wasm.__wbindgen_malloc(data.length);
  bytes().set(data, ptr);
  return [ptr, data.length];
}

const imports = {
  "./flux.js": {
    __wbindgen_object_drop_ref: (index) => {
      take(index);
    },
    __wbindgen_json_parse: (ptr, len) =>
      keep(JSON.parse(decoder.decode(bytes().subarray(ptr, ptr + len)))),
    __wbindgen_json_serialize: (out, index) => {
      const value = heap[index];
      const [ptr, len] = pass(JSON.stringify(value === undefined ? null : value));
      const words = new Int32Array(wasm.memory.buffer);
      words[out / 4 + 1] = len;
      words[out / 4] = ptr;
    },
  },
};

const compiled = new WebAssembly.Module(fs.readFileSync(wasmPath));

function load() {
  wasm = new WebAssembly.Instance(compiled, imports).exports;
}
load();

function parse(source) {
  const [ptr, len] = pass(source);
  return take(wasm.parse(ptr, len));
}

function inspect(node, found) {
  if (Array.isArray(node)) {
    for (const item of node) inspect(item, found);
    return;
  }
  if (node === null || typeof node !== "object") return;
  const where = node.location ? ` at ${node.location.start.line}:${node.location.start.column}` : "";
  if (Array.isArray(node.errors)) {
    for (const error of node.errors) found.errors.push(`${error.msg}${where}`);
  }
  if (typeof node.type === "string" && node.type.startsWith("Bad")) {
    found.errors.push(`${node.type}${where}: ${JSON.stringify(node.text || "")}`);
  }
  if (node.type === "StringLiteral") found.strings.push(node.value);
  for (const [key, value] of Object.entries(node)) {
    if (key !== "location") inspect(value, found);
  }
}

const sources = JSON.parse(fs.readFileSync(0, "utf-8"));
const results = sources.map((source) => {
  const found = { errors: [], strings: [] };
  try {
    inspect(parse(source), found);
  } catch (error) {
    // The parser panicked (it does on a NUL byte): an error, and a fresh instance.
    found.errors.push(`the parser crashed: ${error.message}`);
    load();
  }
  return found;
});
process.stdout.write(JSON.stringify(results));
