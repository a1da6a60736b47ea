import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parse } from "smol-toml";
import { addStargz, ContainerdConfigError, removeStargz } from "./_containerd_config.ts";

const SOCK = "/run/containerd-stargz-grpc/containerd-stargz-grpc.sock";
const edit = { address: SOCK, kubernetes: false, newFileVersion: 2 as const };
// deno-lint-ignore no-explicit-any
const toml = (text: string): any => parse(text);

describe("containerd config edit", () => {
  it("a missing file becomes a version 2 config with the proxy plugin", () => {
    const r = addStargz("", { ...edit, kubernetes: true });
    assert.equal(r.changed, true);
    const doc = toml(r.text);
    assert.equal(doc.version, 2);
    assert.deepEqual({ ...doc.proxy_plugins.stargz }, { type: "snapshot", address: SOCK });
    assert.deepEqual({ ...doc.plugins["io.containerd.grpc.v1.cri"].containerd }, {
      snapshotter: "stargz",
      disable_snapshot_annotations: false,
    });
  });

  it("version 3 puts the CRI keys on the images plugin", () => {
    const r = addStargz(
      'version = 3\n[plugins."io.containerd.cri.v1.images"]\n  snapshotter = "overlayfs"\n',
      {
        ...edit,
        kubernetes: true,
      },
    );
    const images = toml(r.text).plugins["io.containerd.cri.v1.images"];
    assert.equal(images.snapshotter, "stargz");
    assert.equal(images.disable_snapshot_annotations, false);
  });

  it("keeps other proxy plugins and settings; a second run changes nothing", () => {
    const before = `version = 2
root = "/var/lib/containerd"
[proxy_plugins]
  [proxy_plugins.other]
    type = "snapshot"
    address = "/run/other.sock"
`;
    const once = addStargz(before, edit);
    assert.equal(once.changed, true);
    const doc = toml(once.text);
    assert.equal(doc.root, "/var/lib/containerd");
    assert.equal(doc.proxy_plugins.other.address, "/run/other.sock");
    assert.equal(doc.proxy_plugins.stargz.address, SOCK);
    assert.equal(doc.plugins, undefined, "without --kubernetes the CRI plugin is left alone");
    const twice = addStargz(once.text, edit);
    assert.equal(twice.changed, false);
    assert.equal(twice.text, once.text);
  });

  it("fixes a stale address", () => {
    const r = addStargz('[proxy_plugins.stargz]\ntype = "snapshot"\naddress = "/old.sock"\n', edit);
    assert.equal(r.changed, true);
    assert.equal(toml(r.text).proxy_plugins.stargz.address, SOCK);
    assert.equal(toml(r.text).version, undefined, "an existing file keeps its version");
  });

  it("remove takes out the plugin and a stargz CRI snapshotter, nothing else", () => {
    const added = addStargz('version = 2\n[proxy_plugins.other]\naddress = "/o"\n', {
      ...edit,
      kubernetes: true,
    }).text;
    const r = removeStargz(added);
    assert.equal(r.changed, true);
    const doc = toml(r.text);
    assert.equal(doc.proxy_plugins.stargz, undefined);
    assert.equal(doc.proxy_plugins.other.address, "/o");
    assert.equal(doc.plugins["io.containerd.grpc.v1.cri"].containerd.snapshotter, undefined);
    assert.equal(removeStargz(r.text).changed, false);
    assert.equal(removeStargz("").changed, false);
  });

  it("refuses a broken file or a table that is not a table", () => {
    assert.throws(() => addStargz("version = [", edit), ContainerdConfigError);
    assert.throws(() => addStargz("proxy_plugins = 1\n", edit), /"proxy_plugins" is not a table/);
    assert.throws(() => addStargz("version = 9\n", edit), /unsupported config version 9/);
  });
});
