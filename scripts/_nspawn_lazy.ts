/**
 * Host side of scripts/nspawn-install-check.sh: pushes an eStargz image to a registry on the
 * host, pulls it through the booted container's CRI (its containerd socket reached through
 * /proc/<init>/root; the container shares the host's network) and reads a file from the lazily
 * mounted layer inside. Usage: bun scripts/_nspawn_lazy.ts <pid of the container's init>
 */
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { promisify } from "node:util";
import { criPull } from "../test/_cri.ts";
import { estargzLayer, makeBusyboxRoot, pushLayers, tarDir } from "../test/_images.ts";
import { startRegistry } from "../test/_registry.ts";

const run = promisify(execFile);
const init = process.argv[2];
const inside = (cmd: string) =>
  run("nsenter", ["-t", init, "-a", "--", "/bin/sh", "-c", cmd], { timeout: 120_000 });
const dir = fs.mkdtempSync("/tmp/stargz-nspawn-img-");
makeBusyboxRoot(path.join(dir, "bb"));
tarDir(path.join(dir, "bb"), path.join(dir, "bb.tar"));
fs.mkdirSync(path.join(dir, "x", "data"), { recursive: true });
fs.writeFileSync(path.join(dir, "x", "data", "hello"), "hello from a lazy layer\n");
tarDir(path.join(dir, "x"), path.join(dir, "x.tar"));
const reg = await startRegistry();
try {
  const img = await pushLayers(reg, "nspawn/app", "esgz", [
    await estargzLayer(path.join(dir, "bb.tar")),
    await estargzLayer(path.join(dir, "x.tar")),
  ]);
  const t0 = performance.now();
  await criPull(`/proc/${init}/root/run/containerd/containerd.sock`, img.ref);
  // runc cannot create cgroups inside this nspawn (read-only cgroup v1 hierarchies), so no
  // `ctr run`: the file is read straight from the lazily mounted layer instead.
  const st = JSON.parse((await inside("stargz status --json")).stdout);
  const layer = st.images.find((i: { ref: string }) => i.ref === img.ref).layers
    .find((l: { digest: string }) => l.digest === img.layers[1].digest);
  const out = await inside(
    `cat ${layer.mountpoint}/data/hello; ls ${layer.mountpoint}/.stargz-snapshotter/`,
  );
  console.log(
    `CRI pull + first read: ${
      ((performance.now() - t0) / 1000).toFixed(1)
    } s; output: ${out.stdout.trim()}`,
  );
  const content = (await inside("ctr -n k8s.io content ls -q")).stdout;
  for (const l of img.layers) {
    console.log(`${l.digest} downloaded by containerd: ${content.includes(l.digest)}`);
  }
  console.log((await inside("stargz status")).stdout);
  if (out.stdout.split("\n")[0] !== "hello from a lazy layer") throw new Error("wrong content");
  if (img.layers.some((l) => content.includes(l.digest))) throw new Error("a layer was pulled");
} finally {
  await reg.stop();
  fs.rmSync(dir, { recursive: true, force: true });
}
