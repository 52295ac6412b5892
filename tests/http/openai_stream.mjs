// openai_stream.mjs: the `openai` npm package (a real third-party client) streams one chat completion
// from vigild's HTTP door and prints one JSON line: {"text": ..., "chunks": n, "job": ..., "finish": ...}.
//   node openai_stream.mjs NPM_DIR BASE_URL REQUEST_JSON_FILE
// REQUEST_JSON_FILE holds the `messages` array and extra fields (mm_processor_kwargs, ...) as
// the caller built them; the SDK sends them as they are (unknown fields pass through).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [npmDir, baseURL, reqPath] = process.argv.slice(2);
if (!npmDir || !baseURL || !reqPath) {
  console.error("usage: node openai_stream.mjs NPM_DIR BASE_URL REQUEST_JSON_FILE");
  process.exit(2);
}
const mod = await import(pathToFileURL(join(npmDir, "node_modules", "openai", "index.mjs")).href);
const OpenAI = mod.default;
const client = new OpenAI({ baseURL, apiKey: process.env.VG_TOKEN || "none", maxRetries: 0 });
const body = JSON.parse(readFileSync(reqPath, "utf8"));
const stream = await client.chat.completions.create({ ...body, stream: true });
let text = "", chunks = 0, job = "", finish = "";
for await (const chunk of stream) {
  chunks++;
  const c = chunk.choices && chunk.choices[0];
  if (c && c.delta && typeof c.delta.content === "string") text += c.delta.content;
  if (c && c.finish_reason) finish = c.finish_reason;
  if (chunk.vigil && chunk.vigil.job) job = chunk.vigil.job;
}
console.log(JSON.stringify({ text, chunks, job, finish }));
