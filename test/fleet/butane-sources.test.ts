// What a Butane fragment reads from its files dir counts as a source of the fingerprint.
// (Compiling needs `butane`, which Debian does not package; this checks the list of files.)
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { butaneLocalFiles } from "../../src/fleet/build.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "provision-bu-"));
  await mkdir(join(dir, "tree", "sub"), { recursive: true });
  await writeFile(join(dir, "tree", "a.conf"), "a");
  await writeFile(join(dir, "tree", "sub", "b.conf"), "b");
});
afterAll(async () => rm(dir, { recursive: true, force: true }));

it("local: in files (block and flow), trees (every file), units, drop-ins and SSH keys; not inside inline text", async () => {
  const bu = `variant: fcos
version: 1.4.0
passwd:
  users:
    - name: core
      ssh_authorized_keys_local: [keys/admin.pub]
storage:
  files:
    - path: /etc/motd
      contents:
        local: motd.txt
    - path: /etc/flow
      contents: { local: flow.txt }
    - path: /etc/doc
      contents:
        inline: |
          local: not-a-file.txt
  trees:
    - local: tree
      path: /etc/tree
systemd:
  units:
    - name: x.service
      contents_local: units/x.service
      dropins:
        - name: y.conf
          contents_local: units/y.conf
`;
  expect(await butaneLocalFiles(bu, dir)).toEqual(
    [
      "flow.txt",
      "keys/admin.pub",
      "motd.txt",
      "tree/a.conf",
      "tree/sub/b.conf",
      "units/x.service",
      "units/y.conf",
    ].map((f) => join(dir, f)),
  );
});
