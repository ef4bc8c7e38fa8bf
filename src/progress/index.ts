/**
 * The one progress reporter. Library code never prints: it calls a Reporter. The CLI picks
 * how to render: an ora spinner line on a TTY, plain periodic lines otherwise, nothing with
 * --quiet. Warnings and errors always reach stderr (also with --quiet).
 */
import type { Ora } from "ora";
import { interruptSignal } from "../lifecycle.js";

export type Phase = "download" | "decompress" | "write" | "verify" | "signature" | "customize";

export interface Reporter {
  /** A step that is starting or was done: "writing fcos.raw.xz to /dev/sdb". */
  info(message: string): void;
  /** Something the user should know, on one line. */
  warn(message: string): void;
  /** Bytes done of a phase; `total` when known. Called often; the reporter throttles. */
  progress(phase: Phase, done: number, total?: number, label?: string): void;
  /** The phase finished: print its final line. */
  phaseDone(phase: Phase, message: string): void;
  /**
   * A status line that replaces the previous one (qemu-test: elapsed time and the last
   * console line). Called often; the reporter throttles. Optional for older reporters.
   */
  status?(message: string): void;
  /** Stop any spinner (call before printing anything else, and on exit). */
  stop(): void;
}

export const silentReporter: Reporter = {
  info() {},
  warn() {},
  progress() {},
  phaseDone() {},
  status() {},
  stop() {},
};

export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(v >= 100 ? 0 : 1)} ${units[i]}`;
}

function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
}

/** Rate and ETA over the whole phase so far (simple and stable). */
class PhaseMeter {
  readonly start = Date.now();
  constructor(readonly phase: Phase) {}
  line(done: number, total?: number, label?: string): string {
    const secs = Math.max((Date.now() - this.start) / 1000, 0.001);
    const rate = done / secs;
    const head = `${this.phase}${label ? ` ${label}` : ""}`;
    if (total && total > 0) {
      const pct = Math.min(100, (done / total) * 100);
      const eta = rate > 0 ? (total - done) / rate : Number.NaN;
      return `${head}: ${formatBytes(done)} / ${formatBytes(total)} (${pct.toFixed(0)}%), ${formatBytes(rate)}/s, ETA ${formatDuration(eta)}`;
    }
    return `${head}: ${formatBytes(done)}, ${formatBytes(rate)}/s`;
  }
}

export interface ReporterOptions {
  mode: "tty" | "plain" | "quiet";
  stream?: NodeJS.WriteStream;
  /** Plain mode: seconds between progress lines. */
  intervalSeconds?: number;
}

export function createReporter(opts: ReporterOptions): Reporter {
  const out = opts.stream ?? process.stderr;
  const meters = new Map<Phase, PhaseMeter>();
  const meter = (p: Phase) => {
    let m = meters.get(p);
    if (!m) {
      m = new PhaseMeter(p);
      meters.set(p, m);
    }
    return m;
  };
  const write = (s: string) => out.write(`${s}\n`);

  if (opts.mode === "quiet") {
    return { ...silentReporter, warn: (m) => write(`warning: ${m}`) };
  }

  if (opts.mode === "plain") {
    const interval = (opts.intervalSeconds ?? 5) * 1000;
    const last = new Map<Phase, number>();
    let lastStatus = 0;
    return {
      info: (m) => write(m),
      warn: (m) => write(`warning: ${m}`),
      progress(phase, done, total, label) {
        const now = Date.now();
        const m = meter(phase);
        if (!last.has(phase)) last.set(phase, now);
        if (now - (last.get(phase) ?? 0) >= interval) {
          last.set(phase, now);
          write(m.line(done, total, label));
        }
      },
      phaseDone(phase, message) {
        meters.delete(phase);
        last.delete(phase);
        write(message);
      },
      status(message) {
        const now = Date.now();
        if (lastStatus === 0) lastStatus = now;
        if (now - lastStatus >= interval) {
          lastStatus = now;
          write(message);
        }
      },
      stop() {},
    };
  }

  // ora (and string-width, chalk...) loads in the background: until it is there, progress
  // is simply not drawn, so no command waits for a spinner.
  let ora: typeof import("ora").default | undefined;
  import("ora").then(
    (m) => {
      ora = m.default;
    },
    () => {},
  );
  let spinner: Ora | undefined;
  let lastRender = 0;
  const stopSpinner = () => {
    spinner?.stop();
    spinner = undefined;
  };
  return {
    info(m) {
      stopSpinner();
      write(m);
    },
    warn(m) {
      stopSpinner();
      write(`warning: ${m}`);
    },
    progress(phase, done, total, label) {
      const now = Date.now();
      if (spinner && now - lastRender < 100) return;
      lastRender = now;
      const text = meter(phase).line(done, total, label);
      if (!spinner && ora) spinner = ora({ text, stream: out, discardStdin: false }).start();
      else if (spinner) spinner.text = text;
    },
    phaseDone(phase, message) {
      meters.delete(phase);
      if (spinner) spinner.succeed(message);
      else write(`✔ ${message}`);
      spinner = undefined;
    },
    status(message) {
      const now = Date.now();
      if (spinner && now - lastRender < 100) return;
      lastRender = now;
      // One terminal line: a long console line would wrap and break the spinner's redraw.
      const width = Math.max(20, (out.columns || 80) - 3);
      const text = message.length > width ? `${message.slice(0, width - 1)}…` : message;
      if (!spinner && ora) spinner = ora({ text, stream: out, discardStdin: false }).start();
      else if (spinner) spinner.text = text;
    },
    stop: stopSpinner,
  };
}

/** A command's reporter: a spinner on a terminal (not in CI), plain lines otherwise. */
export function commandReporter(quiet: boolean): Reporter {
  const tty = Boolean(process.stderr.isTTY) && !process.env.CI;
  return createReporter({ mode: quiet ? "quiet" : tty ? "tty" : "plain" });
}

/**
 * Ctrl-C, SIGTERM, SIGHUP stop the run once (saying what `what` stops); a second one exits
 * at once (src/lifecycle).
 */
export function stopOnSignal(reporter: Reporter, what = "stopping"): AbortSignal {
  return interruptSignal({
    onFirst(sig) {
      reporter.stop();
      process.stderr.write(
        `provision: ${sig === "SIGINT" ? "Ctrl-C" : sig}: ${what} (press Ctrl-C again to exit at once)\n`,
      );
    },
  });
}
