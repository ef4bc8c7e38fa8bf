# zsh -f capture.zsh SHELL SCRIPT OUT LINE
#
# Type LINE and a TAB into an interactive SHELL (bash or zsh) on a pseudo-terminal (zsh's
# zpty) that has loaded the completion SCRIPT, and write the candidates its completion
# offered to OUT, one a line. bash: the script's function runs as `complete -F` runs it
# (COMP_WORDS as readline split them), wrapped to save COMPREPLY. zsh: the completion system
# (compinit, SCRIPT's directory on $fpath) runs, with compadd wrapped to record every match.
# Output on the terminal is only waited on: <READY> once set up, <CAPTURED> when done.
zmodload zsh/zpty || exit 3
local shell=$1 script=$2 out=$3 line=$4 rc=$3.rc buf
if [[ $shell == bash ]]; then
  cat >$rc <<RC
source ${(q)script}
_capture() {
  _provision "\$@"
  printf '%s\n' "\${COMPREPLY[@]}" >${(q)out}
  printf '<%s>\n' CAPTURED
}
complete -F _capture provision
RC
  zpty sh "PS1='<READY>' bash --norc --noprofile -i"
else
  cat >$rc <<RC
fpath=(${(q)script:h} \$fpath)
autoload -Uz compinit && compinit -u -D
bindkey '^I' complete-word
typeset -gaU _captured
compadd() {
  local -a added
  builtin compadd -O added "\$@"
  _captured+=("\${added[@]}")
  builtin compadd "\$@"
}
_capture() {
  print -rl -- "\${_captured[@]}" >${(q)out}
  print '<CAPTURED>'
}
comppostfuncs=(_capture)
RC
  zpty sh "PS1='<READY>' zsh -f -i"
fi
# Type only once the shell reads the terminal (typed-ahead input can be flushed at start-up)
# and only once the script is loaded: each prompt is <READY>.
zpty -r -m sh buf '*<READY>*' || exit 4
zpty -w sh "source ${(q)rc}"
zpty -r -m sh buf '*<READY>*' || exit 4
zpty -w -n sh "$line"$'\t'
zpty -r -m sh buf '*<CAPTURED>*' || exit 5
zpty -d sh
rm -f $rc
