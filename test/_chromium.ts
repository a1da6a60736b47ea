/**
 * Debian's headless Chromium for pages the daemon serves: the DOM after rendering and a
 * screenshot, kept under `$STARGZ_ARTIFACTS` (default `<tmp>/stargz-artifacts`) for a person to
 * look at. scripts/setup-dev.sh installs `chromium`.
 */
import { execFile } from "node:child_process";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** Where test artifacts (screenshots) are kept. */
export const ARTIFACTS: string = process.env.STARGZ_ARTIFACTS ??
  path.join(os.tmpdir(), "stargz-artifacts");

/** The chromium executable, or undefined when it is not installed. */
export async function chromium(): Promise<string | undefined> {
  for (const c of ["/usr/bin/chromium", "/usr/bin/chromium-browser"]) {
    if (await fs.access(c).then(() => true, () => false)) return c;
  }
  return undefined;
}

/** Renders the HTML file `page`: its DOM after load, and a PNG at `screenshot`. */
export async function renderPage(
  browser: string,
  page: string,
  screenshot: string,
): Promise<string> {
  const profile = await fs.mkdtemp(path.join(os.tmpdir(), "stargz-chromium-"));
  // No network, no sync, no updates: the page must stand alone, and the test must not wander.
  const flags = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    `--user-data-dir=${profile}`,
  ];
  try {
    const url = `file://${page}`;
    const { stdout } = await run(browser, [...flags, "--dump-dom", url], {
      timeout: 120_000,
      maxBuffer: 16 << 20,
    });
    await fs.mkdir(path.dirname(screenshot), { recursive: true });
    await run(browser, [...flags, `--screenshot=${screenshot}`, "--window-size=1280,900", url], {
      timeout: 120_000,
    });
    return stdout;
  } finally {
    await fs.rm(profile, { recursive: true, force: true });
  }
}
