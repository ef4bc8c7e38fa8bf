// The parts of qemu-test that need no guest: console matching, durations, the QEMU command
// line, firmware lookup and JUnit XML (checked with libxml2's xmllint, a real XML parser).
import { mkdtemp, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { shellQuote } from "../../src/exec/index.js";
import { compilePatterns, failureRules } from "../../src/qemu/console.js";
import {
  type BootResult,
  ConsoleWatcher,
  cdata,
  cleanLine,
  findFirmware,
  inspectImage,
  junitXml,
  parseDuration,
  qemuArgs,
} from "../../src/qemu/index.js";
import { freeLocalPort, generateKey, sshKeyFragment, waitAndRun } from "../../src/qemu/ssh.js";

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "provision-qemu-unit-"));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const watcher = (expect: string[], fail: string[] = []) =>
  new ConsoleWatcher({ expects: compilePatterns(expect, "--expect"), fails: failureRules(fail) });

describe("ConsoleWatcher", () => {
  it("sees every expect, across chunk boundaries and in any order", () => {
    const w = watcher(["PROVISION-BOOT-OK", "^ready$"]);
    w.push(Buffer.from("booting\r\nrea"));
    w.push(Buffer.from("dy\r\nPROVISION-BOOT"));
    expect(w.allSeen).toBe(false);
    w.push(Buffer.from("-OK: ignition applied\r\n"));
    expect(w.allSeen).toBe(true);
    expect(w.failure).toBeUndefined();
    expect(w.seen[1]?.line).toBe("ready");
    expect(w.tail()).toEqual(["booting", "ready", "PROVISION-BOOT-OK: ignition applied"]);
  });

  it("matches a prompt that has no newline yet (login:)", () => {
    const w = watcher(["login:"]);
    w.push(Buffer.from("\r\nFedora CoreOS 40\r\nlocalhost login: "));
    expect(w.allSeen).toBe(true);
  });

  it("a match on a partial line reports the whole line once it is complete", async () => {
    const w = watcher(["PROVISION-BOOT-OK"]);
    w.push(Buffer.from("x\nPROVISION-BOOT-OK"));
    expect(w.allSeen).toBe(true);
    expect(w.seen[0]?.line).toBe("PROVISION-BOOT-OK");
    const ended = w.lineEnd(5000);
    w.push(Buffer.from(": ignition applied\r\n"));
    await ended;
    expect(w.seen[0]?.line).toBe("PROVISION-BOOT-OK: ignition applied");
    const t0 = Date.now();
    w.push(Buffer.from("login: "));
    await w.lineEnd(100); // a prompt never ends its line: the wait is bounded
    expect(Date.now() - t0).toBeLessThan(1000);
  });

  it("fails at once on the built-in patterns and on --fail", () => {
    for (const line of [
      "You are in emergency mode. After logging in, type ...",
      "[  OK  ] Starting Emergency Shell...",
      "Press Enter for emergency shell",
      "dracut: Refusing to continue",
      "[    2.1] Kernel panic - not syncing: VFS: Unable to mount root fs",
      "Internal error: Oops: 96000004 [#1] SMP",
      "panic: runtime error: invalid memory address or nil pointer dereference",
      "[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x0]",
      "systemd[1]: foo.service: Ordering cycle found, skipping bar.service",
      "kworker invoked oom-killer: gfp_mask=0x0",
      "ignition[812]: failed to fetch config: resource not found",
    ]) {
      const w = watcher(["login:"]);
      w.push(Buffer.from(`ok\n${line}\nlogin: `));
      expect(w.failure?.line, line).toBe(cleanLine(line));
      expect(w.allSeen, line).toBe(false); // nothing after the failure counts
    }
    const w = watcher(["login:"], ["custom-bad-\\d+"]);
    w.push(Buffer.from("custom-bad-42\n"));
    expect(w.failure?.pattern).toBe("custom-bad-\\d+");
    expect(w.failure?.builtin).toBeUndefined();
    // "Kernel panic" is not the Go pattern "panic: ".
    const k = watcher(["x"]);
    k.push(Buffer.from("something about a panic mode\n"));
    expect(k.failure).toBeUndefined();
  });

  it("cleans terminal escapes and keeps multi-byte characters split across chunks", () => {
    const w = watcher(["Grüße"]);
    const bytes = Buffer.from("\x1b[2J\x1b[01;01H\x1b[1m\x1b[33mGrüße\x1b[0m\r\n");
    const cut = bytes.indexOf(0xc3) + 1; // in the middle of "ü"
    w.push(bytes.subarray(0, cut));
    w.push(bytes.subarray(cut));
    expect(w.allSeen).toBe(true);
    expect(w.tail()).toEqual(["Grüße"]);
    expect(cleanLine("abc\x1b[01;0")).toBe("abc"); // an escape cut off at the end
  });

  it("a bad regex is a SyntaxError naming the flag", () => {
    expect(() => compilePatterns(["("], "--expect")).toThrow(/--expect "\("/);
  });
});

describe("parseDuration", () => {
  it("takes seconds, s, m, h and ms", () => {
    expect(parseDuration("600")).toBe(600_000);
    expect(parseDuration("90s")).toBe(90_000);
    expect(parseDuration("10m")).toBe(600_000);
    expect(parseDuration("1h")).toBe(3_600_000);
    expect(parseDuration("1500ms")).toBe(1500);
    expect(parseDuration("1.5m")).toBe(90_000);
    for (const bad of ["", "abc", "-5", "0", "5x", "10 minutes"])
      expect(parseDuration(bad), bad).toBeUndefined();
  });
});

describe("qemuArgs", () => {
  it("aarch64: virt, cortex-a57 under TCG, AAVMF as two pflash drives, fw_cfg, no reboot", () => {
    const args = qemuArgs({
      arch: "aarch64",
      accel: "tcg",
      firmware: { kind: "uefi", code: "/fw/CODE.fd", vars: "/fw/VARS.fd" },
      varsCopy: "/t/VARS.fd",
      memoryMiB: 1024,
      cpus: 2,
      disk: "/t/over,lay.qcow2",
      ignition: { file: "/t/config.ign", fwCfgName: "opt/com.coreos/config" },
      net: { sshPort: 2222 },
    });
    const s = args.join(" ");
    expect(s).toContain("-M virt -cpu cortex-a57 -accel tcg,thread=multi -smp 2 -m 1024");
    expect(s).toContain("-drive if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd");
    expect(s).toContain("-drive if=pflash,format=raw,unit=1,file=/t/VARS.fd");
    expect(s).toContain("file=/t/over,,lay.qcow2"); // commas doubled inside QEMU options
    expect(s).toContain("-fw_cfg name=opt/com.coreos/config,file=/t/config.ign");
    expect(s).toContain("-netdev user,id=n0,hostfwd=tcp:127.0.0.1:2222-:22");
    expect(s).toContain("-serial stdio");
    expect(args).toContain("-no-reboot");
  });

  it("x86_64: q35; KVM uses -cpu host; SeaBIOS has no pflash", () => {
    const s = qemuArgs({
      arch: "x86_64",
      accel: "kvm",
      firmware: { kind: "bios" },
      memoryMiB: 2048,
      cpus: 4,
      disk: "/t/o.qcow2",
      interactive: true,
    }).join(" ");
    expect(s).toContain("-M q35 -cpu host -accel kvm");
    expect(s).not.toContain("pflash");
    expect(s).toContain("-serial mon:stdio");
  });

  it("shellQuote round-trips through sh", async () => {
    const argv = ["printf", "%s|", "a b", "it's", "x,y=z", "$HOME"];
    const r = await execa("sh", ["-c", shellQuote(argv)]);
    expect(r.stdout).toBe("a b|it's|x,y=z|$HOME|");
  });
});

describe("findFirmware", () => {
  it("finds AAVMF on Debian, pairs CODE and VARS, and SeaBIOS only for x86_64", async () => {
    const fw = await findFirmware("aarch64");
    expect(fw).toEqual({
      kind: "uefi",
      code: "/usr/share/AAVMF/AAVMF_CODE.fd",
      vars: "/usr/share/AAVMF/AAVMF_VARS.fd",
    });
    await expect(findFirmware("aarch64", true)).rejects.toThrow(/x86_64 only/);
    expect(await findFirmware("x86_64", true)).toEqual({ kind: "bios" });
  });
});

describe("JUnit XML", () => {
  const base: BootResult = {
    verdict: "fail",
    exitCode: 1,
    reason: "boot failed after 9.0s: You are in emergency mode <\"&'>",
    matchedPattern: "You are in emergency mode",
    matchedLine: "You are in emergency mode <\"&'>",
    expects: [{ pattern: "PROVISION-BOOT-OK", seen: false }],
    image: "card & <1>.img",
    arch: "aarch64",
    memoryMiB: 512,
    cpus: 2,
    startedAt: "2026-01-01T00:00:00.000Z",
    seconds: 9.5,
    consoleTail: ["a", "You are in emergency mode <\"&'>"],
  };

  it("is well-formed with hostile console text and has one testcase with the failure", async () => {
    const console = "ok\n\x1b[0m\x00\x07 bell ]]> end ]]]]> \ud800 lone surrogate \uffff\nÄ😀\n";
    const file = join(work, "fail.xml");
    await writeFile(file, junitXml(base, console));
    await execa("xmllint", ["--noout", file]);
    const q = async (xpath: string) =>
      String((await execa("xmllint", ["--xpath", xpath, file])).stdout);
    expect(await q("count(//testsuite/testcase)")).toBe("1");
    expect(await q("string(//testcase/@name)")).toBe("boot card & <1>.img");
    expect(await q("string(//testcase/failure/@type)")).toBe("boot-failed");
    expect(await q("string(//testcase/failure/@message)")).toBe(base.reason);
    expect(await q("string(//testcase/failure)")).toContain("You are in emergency mode <\"&'>");
    const out = await q("string(//testcase/system-out)");
    expect(out).toContain(" bell ]]> end ]]]]> ");
    expect(out).toContain("Ä😀");
    expect(await q("string(//testsuites/@failures)")).toBe("1");
  });

  it("pass has no failure element; error uses <error>; timeout is a failure of type timeout", async () => {
    for (const [verdict, el, type] of [
      ["pass", "", ""],
      ["timeout", "failure", "timeout"],
      ["error", "error", "could-not-start"],
    ] as const) {
      const file = join(work, `${verdict}.xml`);
      await writeFile(file, junitXml({ ...base, verdict }, "console"));
      await execa("xmllint", ["--noout", file]);
      const q = async (xpath: string) =>
        String((await execa("xmllint", ["--xpath", xpath, file])).stdout);
      expect(await q("count(//testcase/failure) + count(//testcase/error)")).toBe(el ? "1" : "0");
      if (el) expect(await q(`string(//testcase/${el}/@type)`)).toBe(type);
    }
  });

  it("cdata splits ]]>", () => {
    expect(cdata("a]]>b")).toBe("<![CDATA[a]]]]><![CDATA[>b]]>");
  });
});

describe("--ssh helpers", () => {
  it("generates an ed25519 key whose fragment validates, and polls until aborted", async () => {
    const dir = await mkdtemp(join(work, "ssh-"));
    const key = await generateKey(dir);
    expect(key.publicKey).toMatch(/^ssh-ed25519 \S+ provision-qemu-test$/);
    const ign = join(dir, "fragment.ign");
    await writeFile(ign, JSON.stringify(sshKeyFragment(key.publicKey)));
    await execa("ignition-validate", [ign]);
    // Nothing listens on the port: the loop keeps trying until the signal ends it.
    const port = await freeLocalPort();
    const ac = new AbortController();
    const t0 = Date.now();
    setTimeout(() => ac.abort(), 3000);
    expect(await waitAndRun(key, port, "true", dir, ac.signal)).toBeUndefined();
    expect(Date.now() - t0).toBeLessThan(8000);
  }, 20_000);
});

describe("inspectImage", () => {
  it("tells Flatcar by its partitions and x86_64 by BIOS-BOOT when the ESP says nothing", async () => {
    const img = join(work, "flatcar-like.img");
    await writeFile(img, "");
    await truncate(img, 64 << 20);
    // Flatcar's layout (names and types), empty filesystems.
    await execa("sgdisk", [
      "-n",
      "1:2048:+16M",
      "-c",
      "1:EFI-SYSTEM",
      "-t",
      "1:EF00",
      "-n",
      "2:0:+1M",
      "-c",
      "2:BIOS-BOOT",
      "-t",
      "2:EF02",
      "-n",
      "3:0:+16M",
      "-c",
      "3:USR-A",
      "-n",
      "6:0:+8M",
      "-c",
      "6:OEM",
      "-n",
      "9:0:0",
      "-c",
      "9:ROOT",
      img,
    ]);
    const facts = await inspectImage({ path: img, format: "raw", kind: "file", description: img });
    expect(facts).toEqual({ os: "flatcar", arch: "x86_64", archFrom: "a BIOS-BOOT partition" });
    expect(
      await inspectImage({ path: img, format: "qcow2", kind: "file", description: img }),
    ).toEqual({});
  });
});
