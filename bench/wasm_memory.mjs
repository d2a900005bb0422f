// Runs a wasm32-wasip1 benchmark binary under Node's WASI (V8, the engine Envoy embeds).
// The binary links the egress-guard library, whose proxy-wasm imports ("env") are never called
// by the benchmark: they are stubbed. Its proxy-wasm `_initialize` export is bypassed.
//
// The stack: the binary prints `STACK_TOP <address>` (where its stack starts; it grows down).
// Before the run, every byte of linear memory below the stack's start is painted; after it, the
// lowest byte no longer painted (`STACK_LOWEST <address> <painted up to>`) is the deepest the
// stack went; bench/wasm_memory.py takes the last report and subtracts.
import { writeSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';

const PAINT = 0xa5;
const wasi = new WASI({ version: 'preview1', args: ['bench'], env: {} });
const module = await WebAssembly.compile(await readFile(process.argv[2]));
const imports = wasi.getImportObject();
imports.env = new Proxy({}, { get: () => () => 0 });
// rustc links wasm with --stack-first: the stack is [0, stack size), below the static data.
// Paint up to 1 MiB (rustc's default stack size for a binary), leaving the top 4 KiB, which
// the run's first frames use before STACK_TOP is taken.
const painted = 1024 * 1024 - 4096;
let memory;
function report() {
  const bytes = new Uint8Array(memory.buffer);
  let low = 1024;
  while (low < painted && bytes[low] === PAINT) low++;
  writeSync(1, `STACK_LOWEST ${low} ${painted}\n`);
}
// Paint bytes, once written, stay written: each time the binary prints, the lowest unpainted
// byte so far is reported, and the last report (after RESULT) covers the whole run. (Reported
// as it goes because Node 20 now and then crashes at the very end of a long WASI run.)
const fdWrite = imports.wasi_snapshot_preview1.fd_write;
imports.wasi_snapshot_preview1.fd_write = (...args) => {
  const result = fdWrite(...args);
  report();
  return result;
};
const instance = await WebAssembly.instantiate(module, imports);
memory = instance.exports.memory;
new Uint8Array(memory.buffer).fill(PAINT, 1024, painted);
wasi.start({ exports: { memory, _start: instance.exports._start } });
