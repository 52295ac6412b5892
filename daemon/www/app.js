// vigil's web page: live streams (state, answers, a timeline of started/ended intervals with their
// snapshots) and a form that asks about a clip with the answer streaming in. Plain JavaScript, no
// framework, no build step; everything comes from vigild's HTTP door (docs/http.md).
"use strict";

const $ = (id) => document.getElementById(id);
const tokenInput = $("token");
tokenInput.value = localStorage.getItem("vigil-token") || "";
tokenInput.addEventListener("change", () => {
  localStorage.setItem("vigil-token", tokenInput.value);
  location.reload();
});

function authHeaders(extra) {
  const h = Object.assign({}, extra || {});
  if (tokenInput.value) h.Authorization = "Bearer " + tokenInput.value;
  return h;
}

// EventSource and <img> cannot send headers: the token goes as access_token.
function withToken(url) {
  if (!tokenInput.value) return url;
  return url + (url.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(tokenInput.value);
}

async function getJSON(url) {
  const r = await fetch(url, { headers: authHeaders() });
  const body = await r.json();
  if (!r.ok) throw new Error((body.error && body.error.message) || r.statusText);
  return body;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

const fmt = (t) => (typeof t === "number" ? t.toFixed(1) + " s" : "?");

class StreamView {
  constructor(info) {
    this.name = info.name;
    this.tmax = 1;
    this.root = el("div", "stream");
    this.root.dataset.stream = info.name;
    const h = el("h3");
    h.append(el("span", "", info.name + " "));
    this.stateEl = el("span", "state", info.state || "?");
    h.append(this.stateEl);
    this.detailEl = el("span", "muted", "");
    h.append(" ", this.detailEl);
    this.root.append(h, el("div", "muted", info.url || ""));
    this.q = (info.questions || []).map((text, i) => {
      const box = el("div", "question");
      box.dataset.question = String(i);
      const timeline = el("div", "timeline");
      const axis = el("div", "axis");
      const answer = el("div", "answer");
      const events = el("div", "events");
      box.append(el("div", "qtext", text), timeline, axis, answer, events);
      this.root.append(box);
      return { text, timeline, axis, answer, events, intervals: [] };
    });
    $("streams").append(this.root);
    this.setState(info.state, info.detail);
    this.connect();
  }

  connect() {
    const url = withToken(`/v1/streams/${encodeURIComponent(this.name)}/events?since=0`);
    this.es = new EventSource(url);
    for (const kind of ["state", "answer", "event"])
      this.es.addEventListener(kind, (e) => this.onRecord(kind, JSON.parse(e.data)));
    // A record of kind `error` and the connection's own error share the name.
    this.es.addEventListener("error", (e) => {
      if (e.data) this.detailEl.textContent = JSON.parse(e.data).error || "error";
    });
  }

  close() {
    this.es.close();
    this.root.remove();
  }

  setState(state, detail) {
    this.stateEl.textContent = state || "?";
    this.stateEl.className = "state " + (state || "");
    this.detailEl.textContent = detail || "";
  }

  onRecord(kind, r) {
    if (kind === "state") {
      this.setState(r.state, r.detail);
      return;
    }
    const q = this.q[r.question];
    if (!q) return;
    if (kind === "answer") {
      q.answer.textContent = r.text;
      if (r.window && r.window.end > this.tmax) this.tmax = r.window.end;
    } else if (kind === "event") {
      if (r.event === "started") {
        q.intervals.push({ seq: r.seq, start: r.start, end: r.end, open: true, snapshot: !!r.snapshot, label: r.label });
      } else if (r.event === "ended") {
        const open = q.intervals.slice().reverse().find((iv) => iv.open);
        if (open) Object.assign(open, { end: r.end, open: false });
        else q.intervals.push({ seq: r.seq, start: r.start, end: r.end, open: false, label: r.label });
      }
      const line = el("div", "", `${r.event} ${fmt(r.event === "started" ? r.start : r.end)} (seq ${r.seq})${r.label ? ": " + r.label : ""}`);
      line.dataset.kind = r.event;
      q.events.prepend(line);
      if (typeof r.end === "number" && r.end > this.tmax) this.tmax = r.end;
    }
    this.render();
  }

  render() {
    const span = Math.max(this.tmax, 1);
    for (const q of this.q) {
      q.timeline.replaceChildren();
      for (const iv of q.intervals) {
        const end = iv.open ? Math.max(iv.end || iv.start, this.tmax) : iv.end;
        const d = el("div", "interval" + (iv.open ? " open" : ""));
        d.dataset.kind = iv.open ? "started" : "ended";
        d.style.left = (100 * iv.start) / span + "%";
        d.style.width = (100 * Math.max(end - iv.start, 0)) / span + "%";
        d.title = `${fmt(iv.start)} – ${iv.open ? "now" : fmt(iv.end)}${iv.label ? ": " + iv.label : ""}`;
        if (iv.snapshot) {
          const img = el("img");
          img.alt = "snapshot of event " + iv.seq;
          img.src = withToken(`/v1/streams/${encodeURIComponent(this.name)}/events/${iv.seq}/snapshot.jpg`);
          d.append(img);
        }
        q.timeline.append(d);
      }
      q.axis.replaceChildren(el("span", "", "0 s"), el("span", "", fmt(span)));
    }
  }
}

const views = new Map();

async function refresh() {
  try {
    const info = await getJSON("/v1/info");
    $("daemon").textContent = `${info.model.name} · ${info.jobs_running} running, ${info.queue_depth} queued · up ${Math.round(info.uptime_s)} s`;
    const list = (await getJSON("/v1/streams")).streams || [];
    const names = new Set(list.map((s) => s.name));
    for (const s of list) if (!views.has(s.name)) views.set(s.name, new StreamView(s));
    for (const [name, v] of views) if (!names.has(name)) { v.close(); views.delete(name); }
    $("no-streams").hidden = views.size > 0;
  } catch (e) {
    $("daemon").textContent = "vigild unreachable: " + e.message;
  }
}

// The ask form: a streamed chat completion (SSE over fetch), the answer growing token by token.
$("ask").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const video = $("ask-video").value.trim(), question = $("ask-question").value.trim();
  const url = /^[a-z]+:/.test(video) ? video : "file://" + video;
  $("ask-answer").textContent = "";
  $("ask-events").textContent = "";
  $("ask-status").textContent = "asking…";
  try {
    const r = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: authHeaders({ "Content-Type": "application/json" }),
      body: JSON.stringify({ stream: true, messages: [{ role: "user", content: [
        { type: "video_url", video_url: { url } }, { type: "text", text: question }] }] }),
    });
    if (!r.ok) {
      const e = await r.json().catch(() => ({}));
      throw new Error((e.error && e.error.message) || r.statusText);
    }
    const reader = r.body.getReader(), dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const frame = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        const data = frame.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
        if (!data || data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        const c = chunk.choices && chunk.choices[0];
        if (c && c.delta && c.delta.content) $("ask-answer").textContent += c.delta.content;
        if (chunk.vigil) {
          $("ask-status").textContent = `job ${chunk.vigil.job}: ${chunk.vigil.state}`;
          for (const e of chunk.vigil.events || [])
            $("ask-events").append(el("div", "", `${fmt(e.start)} – ${fmt(e.end)}: ${e.label}`));
        }
      }
    }
  } catch (e) {
    $("ask-status").textContent = "failed: " + e.message;
  }
});

refresh();
setInterval(refresh, 3000);
