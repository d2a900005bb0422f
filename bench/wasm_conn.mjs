// egress-guard's own Wasm code per connection, without Envoy: Node's V8 (the engine Envoy embeds)
// runs a proxy-wasm filter module under a stub host whose hostcalls cost next to nothing, and
// drives it through connections as Envoy does with tls_inspector (context create, new
// connection, client and server data, close, done, delete). Prints one JSON line:
// {"ns_per_conn": ..., "conns": ...}.
//
//   node wasm_conn.mjs <module.wasm> <plugin configuration file|-> <sni> <port> [connections]
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';

const [wasmPath, configPath, sni, port, count] = process.argv.slice(2);
const config = configPath === '-' ? new Uint8Array() : new Uint8Array(await readFile(configPath));
const conns = Number(count || 200000);
const enc = new TextEncoder();
const properties = {
  'plugin_root_id': enc.encode('noop-tcp'),
  'destination\0address': enc.encode(`127.0.0.1:${port}`),
  'connection\0requested_server_name': enc.encode(sni),
};

let ex;
const mem = () => ex.memory.buffer;
function give(bytes, retPtr, retSize) {
  const p = ex.proxy_on_memory_allocate(bytes.length);
  new Uint8Array(mem(), p, bytes.length).set(bytes);
  const v = new DataView(mem());
  v.setUint32(retPtr, p, true);
  v.setUint32(retSize, bytes.length, true);
  return 0;
}
let metricId = 0;
const host = {
  proxy_get_property(pathPtr, pathSize, retPtr, retSize) {
    // The path's segments, each NUL-terminated (proxy-wasm Rust SDK).
    const path = new Uint8Array(mem(), pathPtr, pathSize);
    const v = properties[String.fromCharCode.apply(null, path.subarray(0, path[pathSize - 1] === 0 ? pathSize - 1 : pathSize))];
    return v ? give(v, retPtr, retSize) : 1; // NotFound
  },
  proxy_get_buffer_bytes(type, start, len, retPtr, retSize) {
    return type === 7 && config.length ? give(config, retPtr, retSize) : 1; // 7: plugin configuration
  },
  proxy_get_log_level(ret) { new DataView(mem()).setUint32(ret, 2, true); return 0; },
  proxy_get_current_time_nanoseconds(ret) {
    new DataView(mem()).setBigUint64(ret, process.hrtime.bigint(), true); return 0;
  },
  proxy_define_metric(type, p, n, ret) { new DataView(mem()).setUint32(ret, ++metricId, true); return 0; },
};
const imports = new WASI({ version: 'preview1', args: [], env: {} }).getImportObject();
imports.env = new Proxy(host, { get: (t, k) => t[k] || (() => 0) });
const instance = await WebAssembly.instantiate(await WebAssembly.compile(await readFile(wasmPath)), imports);
ex = instance.exports;
if (ex._initialize) ex._initialize();
const ROOT = 1;
ex.proxy_on_context_create(ROOT, 0);
ex.proxy_on_vm_start(ROOT, 0);
if (!ex.proxy_on_configure(ROOT, config.length)) throw new Error('configuration refused');

let id = 2;
function connection() {
  const c = id++;
  ex.proxy_on_context_create(c, ROOT);
  ex.proxy_on_new_connection(c);
  ex.proxy_on_downstream_data(c, 517, 0);
  ex.proxy_on_upstream_data(c, 1, 0);
  ex.proxy_on_downstream_connection_close(c, 1);
  ex.proxy_on_log(c);
  if (ex.proxy_on_done(c)) ex.proxy_on_delete(c);
}
for (let i = 0; i < conns; i++) connection(); // warm up: V8 tiers up
const t0 = process.hrtime.bigint();
for (let i = 0; i < conns; i++) connection();
const ns = Number(process.hrtime.bigint() - t0) / conns;
console.log(JSON.stringify({ ns_per_conn: ns, conns }));
