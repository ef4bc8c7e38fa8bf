// Ignition's merge rules as flattenConfig applies them (coreos/ignition config/merge).
import { describe, expect, it } from "vitest";
import { flattenConfig, mergeConfigs } from "../../src/fleet/flatten.js";

const b64 = (o: object) => `data:;base64,${Buffer.from(JSON.stringify(o)).toString("base64")}`;

describe("mergeConfigs / flattenConfig", () => {
  it("keyed lists merge field by field, the child winning; plain lists are sets", () => {
    const parent = {
      systemd: {
        units: [{ name: "a.service", enabled: true, dropins: [{ name: "x.conf", contents: "1" }] }],
      },
      passwd: { users: [{ name: "core", sshAuthorizedKeys: ["k1"], groups: ["wheel"] }] },
    };
    const child = {
      systemd: {
        units: [
          { name: "a.service", dropins: [{ name: "x.conf", contents: "2" }, { name: "y.conf" }] },
        ],
      },
      passwd: { users: [{ name: "core", sshAuthorizedKeys: ["k2", "k1"] }, { name: "ops" }] },
    };
    expect(mergeConfigs(parent, child)).toEqual({
      systemd: {
        units: [
          {
            name: "a.service",
            enabled: true,
            dropins: [{ name: "x.conf", contents: "2" }, { name: "y.conf" }],
          },
        ],
      },
      passwd: {
        users: [
          { name: "core", sshAuthorizedKeys: ["k1", "k2"], groups: ["wheel"] },
          { name: "ops" },
        ],
      },
    });
  });

  it("a path is a file, a directory or a link: the child's kind replaces the parent's", () => {
    const m = mergeConfigs(
      { storage: { files: [{ path: "/etc/x", mode: 420 }], directories: [{ path: "/etc/d" }] } },
      { storage: { directories: [{ path: "/etc/x" }] } },
    );
    expect(m).toEqual({
      storage: { files: [], directories: [{ path: "/etc/d" }, { path: "/etc/x" }] },
    });
  });

  it("flattens nested data: children in order and keeps remote merges", () => {
    const inner = {
      ignition: { version: "3.3.0", config: { merge: [{ source: "https://example.com/x.ign" }] } },
      storage: { files: [{ path: "/a", mode: 420 }] },
    };
    const top = {
      ignition: {
        version: "3.3.0",
        config: {
          merge: [
            { source: b64({ storage: { files: [{ path: "/a", mode: 384 }] } }) },
            { source: b64(inner) },
          ],
        },
      },
    };
    expect(flattenConfig(top)).toEqual({
      ignition: { version: "3.3.0", config: { merge: [{ source: "https://example.com/x.ign" }] } },
      storage: { files: [{ path: "/a", mode: 420 }] },
    });
  });
});
