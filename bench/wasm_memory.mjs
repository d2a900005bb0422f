// Runs a wasm32-wasip1 benchmark binary under Node's WASI (V8, the engine Envoy embeds).
// The binary links the egress-guard library, whose proxy-wasm imports ("env") are never called
// by the benchmark: they are stubbed. Its proxy-wasm `_initialize` export is bypassed.
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';

const wasi = new WASI({ version: 'preview1', args: ['bench'], env: {} });
const module = await WebAssembly.compile(await readFile(process.argv[2]));
const imports = wasi.getImportObject();
imports.env = new Proxy({}, { get: () => () => 0 });
const instance = await WebAssembly.instantiate(module, imports);
wasi.start({ exports: { memory: instance.exports.memory, _start: instance.exports._start } });
