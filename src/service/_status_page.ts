/**
 * The admin API's page at `/`: the status document rendered on the server as one
 * self-contained HTML file (inline CSS, no script, no external assets: it is opened through an
 * SSH tunnel or `curl --unix-socket` as often as in a browser). It reloads itself every 5 s.
 */
import type { Status } from "./_status.ts";

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** `1.5 MiB`-style size. */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let x = n;
  while (x >= 1024 && i < units.length - 1) {
    x /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${x.toFixed(1)} ${units[i]}`;
}

const CSS = `
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .2em}h2{font-size:1.05em;margin:1.4em 0 .4em;word-break:break-all}
.meta{color:#666;font-size:.9em}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.3em .6em;border-bottom:1px solid #e4e4e4;vertical-align:top}
th{background:#f0f0f0;font-weight:600}
code{font:12px ui-monospace,monospace}
.bar{width:12em;height:.9em;background:#e6e6e6;border-radius:3px;overflow:hidden;display:inline-block;vertical-align:middle}
.bar>span{display:block;height:100%;background:#2e7d32}
.remote{color:#2e7d32;font-weight:600}.fallback{color:#b26a00;font-weight:600}
.err{color:#c62828}
`;

function bar(percent: number): string {
  const p = Math.max(0, Math.min(100, percent));
  return `<span class="bar" role="progressbar" aria-valuenow="${
    p.toFixed(1)
  }" aria-valuemin="0" aria-valuemax="100"><span style="width:${p.toFixed(1)}%"></span></span> ${
    p.toFixed(1)
  }%`;
}

function layerRow(l: Status["images"][number]["layers"][number]): string {
  const mode = l.mode === "remote"
    ? `<span class="remote">remote</span>`
    : `<span class="fallback">fallback</span><br><span class="reason">${
      esc(l.reason ?? "")
    }</span>`;
  return `<tr class="layer" data-digest="${esc(l.digest)}" data-mode="${l.mode}">` +
    `<td><code>${esc(l.digest)}</code></td>` +
    `<td>${l.size === undefined ? "" : formatBytes(l.size)}</td>` +
    `<td>${l.fetchedPercent === undefined ? "" : bar(l.fetchedPercent)}</td>` +
    `<td>${mode}</td>` +
    `<td class="err">${esc(l.error ?? "")}</td></tr>`;
}

/** The status page. */
export function renderStatusPage(s: Status): string {
  const images = s.images.map((img) =>
    `<section class="image"><h2>${esc(img.ref)}</h2><table><thead><tr>` +
    `<th>layer</th><th>size</th><th>fetched</th><th>mode</th><th>errors</th></tr></thead>` +
    `<tbody>${img.layers.map(layerRow).join("")}</tbody></table></section>`
  ).join("\n");
  const cache = Object.entries(s.cache).map(([k, v]) =>
    `<tr><td>${esc(k)}</td><td>${
      typeof v === "number" && k.endsWith("Bytes") ? formatBytes(v) : esc(String(v))
    }</td></tr>`
  ).join("");
  const failed = s.restore.failed.map((f) =>
    `<tr><td>${esc(f.name)}</td><td><code>${esc(f.mountpoint)}</code></td><td class="err">${
      esc(f.error)
    }</td></tr>`
  ).join("");
  const d = s.daemon;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>stargz status</title><style>${CSS}</style></head><body>
<h1>stargz snapshotter</h1>
<p class="meta">${esc(d.version)} · pid ${d.pid} · config <code>${esc(d.config)}</code>${
    d.configFound ? "" : " (absent: defaults)"
  } · root <code>${esc(d.root)}</code> · socket <code>${esc(d.address)}</code></p>
${images || `<p id="no-images">No image layers prepared yet.</p>`}
<h2>Cache</h2><table id="cache"><tbody>${cache}</tbody></table>
<h2>Restore failures</h2>${
    failed
      ? `<table id="restore-failed"><thead><tr><th>snapshot</th><th>mountpoint</th><th>error</th></tr></thead><tbody>${failed}</tbody></table>`
      : `<p id="restore-none">None${
        s.restore.pending.length ? ` (${s.restore.pending.length} pending)` : ""
      }.</p>`
  }
</body></html>
`;
}
