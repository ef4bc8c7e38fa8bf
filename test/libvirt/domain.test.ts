/**
 * The domain XML for `qemu-test --connect`, read back by libvirt's own tools: the RNG
 * schema (virt-xml-validate), the test driver's parser (virsh -c test:///default define,
 * no daemon), and xmllint for what a value became after escaping.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DomainSpec, domainXml } from "../../src/libvirt/domain.js";

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "provision-domain-test-"));
});
afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

const base = (over: Partial<DomainSpec> = {}): DomainSpec => ({
  name: "provision-0a1b2c3d",
  title: "provision qemu-test disk.img",
  arch: "aarch64",
  type: "qemu",
  memoryMiB: 2048,
  cpus: 2,
  firmware: "efi",
  disk: { path: "/var/lib/libvirt/images/provision/p/overlay.qcow2", format: "qcow2" },
  consoleLog: "/var/lib/libvirt/images/provision/p/console.log",
  ignition: {
    fwCfgName: "opt/com.coreos/config",
    file: "/var/lib/libvirt/images/provision/p/config.ign",
  },
  ...over,
});

async function xpath(file: string, expr: string): Promise<string> {
  return (await execa("xmllint", ["--xpath", expr, file])).stdout.trim();
}

describe("domainXml", () => {
  const cases: [string, Partial<DomainSpec>][] = [
    ["aarch64 UEFI TCG", {}],
    ["aarch64 UEFI KVM with user networking", { type: "kvm", userNet: true }],
    [
      "x86_64 UEFI TCG, Flatcar",
      {
        arch: "x86_64",
        ignition: { fwCfgName: "opt/org.flatcar-linux/config", file: "/d/config.ign" },
      },
    ],
    ["x86_64 SeaBIOS, no config", { arch: "x86_64", firmware: "bios", ignition: undefined }],
  ];
  for (const [what, over] of cases) {
    it(`${what}: passes virt-xml-validate and the test driver's define`, async () => {
      const file = join(work, `${what.replace(/\W+/g, "-")}.xml`);
      await writeFile(file, domainXml(base(over)));
      const v = await execa("virt-xml-validate", [file, "domain"], { reject: false });
      expect(v.stdout + v.stderr).toContain("validates");
      expect(v.exitCode).toBe(0);
      const d = await execa("virsh", ["-c", "test:///default", "define", file], { reject: false });
      expect(d.stderr).toBe("");
      expect(d.stdout).toContain("Domain 'provision-0a1b2c3d' defined");
      // Every way the guest ends destroys it: -no-reboot.
      for (const ev of ["on_poweroff", "on_reboot", "on_crash"])
        expect(await xpath(file, `string(/domain/${ev})`)).toBe("destroy");
      const spec = base(over);
      expect(await xpath(file, "string(/domain/@type)")).toBe(spec.type);
      expect(await xpath(file, "string(/domain/os/type/@arch)")).toBe(spec.arch);
      expect(await xpath(file, "string(/domain/os/@firmware)")).toBe(
        spec.firmware === "efi" ? "efi" : "",
      );
      const fw = await execa(
        "xmllint",
        ["--xpath", "//*[local-name()='commandline']/*[local-name()='arg']/@value", file],
        { reject: false },
      );
      if (spec.ignition)
        expect(fw.stdout).toContain(
          `value="name=${spec.ignition.fwCfgName},file=${spec.ignition.file}"`,
        );
      else expect(fw.stdout).toBe("");
    });
  }

  it("escapes paths for XML and doubles commas for QEMU's option syntax", async () => {
    const odd = "/srv/a,b & <c>'d\"";
    const file = join(work, "odd.xml");
    await writeFile(
      file,
      domainXml(
        base({
          ignition: { fwCfgName: "opt/com.coreos/config", file: `${odd}/config.ign` },
          disk: { path: `${odd}/o.qcow2`, format: "qcow2" },
        }),
      ),
    );
    expect((await execa("virt-xml-validate", [file, "domain"])).exitCode).toBe(0);
    expect(await xpath(file, "string(/domain/devices/disk/source/@file)")).toBe(`${odd}/o.qcow2`);
    expect(
      await xpath(file, "string(//*[local-name()='commandline']/*[local-name()='arg'][2]/@value)"),
    ).toBe(`name=opt/com.coreos/config,file=/srv/a,,b & <c>'d"/config.ign`);
  });
});
