/**
 * `provision completion bash|zsh|fish` prints a completion script; the hidden
 * `provision __complete <shell> -- <words...>` answers it (./complete.ts has the protocol).
 * Only commander is loaded up front: the scripts and the completer are imported when run.
 */
import { Argument, type Command } from "commander";

const SHELLS = ["bash", "zsh", "fish"] as const;
type Shell = (typeof SHELLS)[number];

export function registerCompletion(program: Command): void {
  program
    .command("completion")
    .description("print the shell completion script for bash, zsh or fish")
    .addArgument(new Argument("<shell>", "bash, zsh or fish").choices(SHELLS))
    .addHelpText(
      "after",
      `
Install (then start a new shell):
  bash  provision completion bash > ~/.local/share/bash-completion/completions/provision
  zsh   provision completion zsh > "\${fpath[1]}/_provision"    (any directory on $fpath)
  fish  provision completion fish > ~/.config/fish/completions/provision.fish

The script asks provision itself for every candidate (provision __complete), so it stays
right when provision is updated.`,
    )
    .action(async (shell: Shell) => {
      const { completionScript } = await import("./scripts.js");
      process.stdout.write(completionScript(shell));
    });

  program
    .command("__complete", { hidden: true })
    .description("the candidates for the last word (the completion scripts' protocol)")
    .argument("<shell>", "bash, zsh or fish (bash gets no descriptions)")
    .argument("[words...]", "after --: the words after provision, the last one being completed")
    .helpOption(false)
    .allowUnknownOption()
    .allowExcessArguments()
    .action(async (shell: string, words: string[], _o: unknown, cmd: Command) => {
      let out = ":1\n";
      try {
        const { complete, formatCompletion } = await import("./complete.js");
        out = formatCompletion(await complete(cmd.parent ?? cmd, words), shell);
      } catch (err) {
        // A completion never fails loudly: the shell offers nothing (ERROR).
        if (process.env.PROVISION_DEBUG) process.stderr.write(`${(err as Error).stack}\n`);
      }
      process.stdout.write(out);
    });
}
