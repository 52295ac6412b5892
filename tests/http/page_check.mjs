// page_check.mjs: headless Chromium (driven through chromedriver's WebDriver HTTP API with Node's
// fetch) loads vigild's web page and waits until the timeline of stream STREAM shows a `started`
// interval; then checks the DOM (interval, event line, state, snapshot image loaded) and a
// screenshot (PNG decoded here: it must contain the interval's red). Then it asks about CLIP with
// the page's form and waits for the streamed answer. Prints one JSON line.
//   node page_check.mjs DRIVER_URL PAGE_URL STREAM SCREENSHOT_PNG CLIP QUESTION
import { writeFileSync } from "node:fs";
import { inflateSync } from "node:zlib";

const [driver, page, stream, shot, clip, question] = process.argv.slice(2);
if (!driver || !page || !stream || !shot || !clip || !question) {
  console.error("usage: node page_check.mjs DRIVER_URL PAGE_URL STREAM SCREENSHOT_PNG CLIP QUESTION");
  process.exit(2);
}

async function wd(method, path, body) {
  const r = await fetch(driver + path, {
    method,
    headers: { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const j = await r.json();
  if (!r.ok) throw new Error(`${method} ${path}: ${JSON.stringify(j.value)}`);
  return j.value;
}

// Decodes an 8-bit RGB/RGBA non-interlaced PNG (what Chromium writes) into {w, h, px, channels}.
function decodePNG(buf) {
  let off = 8, w = 0, h = 0, ch = 0;
  const idat = [];
  while (off < buf.length) {
    const len = buf.readUInt32BE(off), type = buf.toString("ascii", off + 4, off + 8);
    const data = buf.subarray(off + 8, off + 8 + len);
    if (type === "IHDR") {
      w = data.readUInt32BE(0); h = data.readUInt32BE(4);
      if (data[8] !== 8 || data[12] !== 0) throw new Error("unsupported PNG");
      ch = data[9] === 6 ? 4 : data[9] === 2 ? 3 : 0;
      if (!ch) throw new Error("unsupported PNG color type " + data[9]);
    } else if (type === "IDAT") idat.push(data);
    off += 12 + len;
  }
  const raw = inflateSync(Buffer.concat(idat)), stride = w * ch, px = Buffer.alloc(h * stride);
  for (let y = 0; y < h; y++) {
    const f = raw[y * (stride + 1)], src = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let x = 0; x < stride; x++) {
      const a = x >= ch ? px[y * stride + x - ch] : 0, b = y ? px[(y - 1) * stride + x] : 0;
      const c = x >= ch && y ? px[(y - 1) * stride + x - ch] : 0;
      let v = src[x];
      if (f === 1) v += a;
      else if (f === 2) v += b;
      else if (f === 3) v += (a + b) >> 1;
      else if (f === 4) { const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c); v += pa <= pb && pa <= pc ? a : pb <= pc ? b : c; }
      px[y * stride + x] = v & 255;
    }
  }
  return { w, h, px, ch };
}

const caps = { capabilities: { alwaysMatch: { browserName: "chrome", "goog:chromeOptions": {
  binary: "/usr/bin/chromium",
  args: ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"] } } } };
const session = await wd("POST", "/session", caps);
const sid = session.sessionId;
const exec = (script) => wd("POST", `/session/${sid}/execute/sync`, { script, args: [] });
let result = { intervals: 0 };
try {
  await wd("POST", `/session/${sid}/url`, { url: page });
  const probe = `
    const s = document.querySelector('[data-stream="${stream}"]');
    if (!s) return {intervals: 0};
    const img = s.querySelector('.interval img');
    return {
      intervals: s.querySelectorAll('.interval').length,
      started_lines: s.querySelectorAll('.events [data-kind="started"]').length,
      state: s.querySelector('.state').textContent,
      answer: (s.querySelector('.answer') || {}).textContent || "",
      snapshot_loaded: !!(img && img.complete && img.naturalWidth > 0),
      snapshot_img: !!img,
    };`;
  // Poll until a started interval with its snapshot is on the page (a hang guard of 150 s).
  for (let i = 0; i < 300; i++) {
    result = await exec(probe);
    if (result.intervals > 0 && (!result.snapshot_img || result.snapshot_loaded)) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  const png = Buffer.from(await wd("GET", `/session/${sid}/screenshot`), "base64");
  writeFileSync(shot, png);
  const img = decodePNG(png);
  let red = 0;
  for (let i = 0; i < img.w * img.h; i++) {
    const r = img.px[i * img.ch], g = img.px[i * img.ch + 1], b = img.px[i * img.ch + 2];
    // The interval's colours: #e0564f and its stripes #ea7e78.
    if ((Math.abs(r - 224) < 12 && Math.abs(g - 86) < 12 && Math.abs(b - 79) < 12) ||
        (Math.abs(r - 234) < 12 && Math.abs(g - 126) < 12 && Math.abs(b - 120) < 12)) red++;
  }
  result.screenshot = { width: img.w, height: img.h, interval_pixels: red };
  // The ask form: fill it in, submit, wait for the answer and its parsed time range.
  await exec(`document.getElementById("ask-video").value = ${JSON.stringify(clip)};
    document.getElementById("ask-question").value = ${JSON.stringify(question)};
    document.querySelector("#ask button").click(); return 1;`);
  for (let i = 0; i < 300; i++) {
    result.ask = await exec(`return {answer: document.getElementById("ask-answer").textContent,
      status: document.getElementById("ask-status").textContent,
      events: document.querySelectorAll("#ask-events div").length};`);
    if (result.ask.events > 0 || result.ask.status.startsWith("failed")) break;
    await new Promise((r) => setTimeout(r, 200));
  }
} finally {
  await wd("DELETE", `/session/${sid}`).catch(() => {});
}
console.log(JSON.stringify(result));
