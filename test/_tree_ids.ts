/**
 * Prints, as JSON, every node of the layer tree of the blob file named by the last argument:
 * `[id, path, [[name, id], …]]`. Run in a fresh process by src/fs/tree_reference.test.ts to show
 * that two processes number a layer's nodes alike.
 */
import { fileBlobReader, openBlob } from "../src/estargz/mod.ts";
import { LayerTree } from "../src/fs/_tree.ts";

const reader = await fileBlobReader(process.argv[process.argv.length - 1]);
const tree = await LayerTree.build(await openBlob(reader));
const out: [number, string, [string, number][]][] = [];
for (let id = 1; id <= tree.size; id++) out.push([id, tree.node(id)!.path, [...tree.entries(id)]]);
await reader.close();
process.stdout.write(JSON.stringify(out));
