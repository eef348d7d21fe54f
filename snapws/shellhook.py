"""Shell hooks that make an interactive shell follow a remounted workspace.

When snapws puts a new mount in place of a workspace's old one (only when
no program holds the workspace: a shell that entered it during that swap,
or one a tool such as ``umount --lazy`` left behind), a shell whose current
directory is inside keeps the old, frozen, read-only mount until it runs
``cd .``. The snippets here, ``eval``'d by the
user's shell (``eval "$(snapws hook bash)"``, as direnv's are), do that by
themselves before each prompt, only when needed: when ``$PWD`` names a
directory that is not the shell's actual current directory (another
(st_dev, st_ino) pair), the shell re-enters ``$PWD`` quietly. If ``$PWD`` is
gone, nothing happens.

Each prompt costs two stat calls made by shell builtins: no snapws, no
python, no fork (a fish whose ``test`` lacks ``-ef`` runs the system
``test`` instead). The snippets keep the user's ``PROMPT_COMMAND`` (string
or bash 5.1 array), ``precmd_functions`` and ``fish_prompt`` handlers, keep
``$?`` (and bash's and zsh's ``$OLDPWD``), leave the directory stack alone,
and can be ``eval``'d twice without adding the hook twice.

Pure strings: nothing here reads or writes anything.
"""

from __future__ import annotations

from snapws.errors import MissingArgumentError

_BASH = r"""_snapws_hook() {
  local snapws_status=$?
  if [[ ! . -ef $PWD && -d $PWD ]]; then
    local oldpwd=${OLDPWD-}
    builtin cd -- "$PWD" >/dev/null 2>&1
    OLDPWD=$oldpwd
  fi
  return $snapws_status
}
if [[ " ${PROMPT_COMMAND[*]:-} " != *_snapws_hook* ]]; then
  if [[ $(declare -p PROMPT_COMMAND 2>/dev/null) == "declare -a"* ]]; then
    PROMPT_COMMAND=(_snapws_hook "${PROMPT_COMMAND[@]}")
  else
    PROMPT_COMMAND="_snapws_hook${PROMPT_COMMAND:+;$PROMPT_COMMAND}"
  fi
fi
"""

_ZSH = r"""_snapws_hook() {
  local snapws_status=$?
  emulate -L zsh
  setopt no_auto_pushd
  if [[ ! . -ef $PWD && -d $PWD ]]; then
    local oldpwd=$OLDPWD
    builtin cd -q "$PWD" >/dev/null 2>&1
    OLDPWD=$oldpwd
  fi
  return $snapws_status
}
typeset -ag precmd_functions
if (( ! ${precmd_functions[(I)_snapws_hook]} )); then
  precmd_functions=(_snapws_hook $precmd_functions)
fi
"""

_FISH = r"""if builtin test . -ef . 2>/dev/null
    function __snapws_same_dir
        builtin test . -ef "$PWD"
    end
else
    function __snapws_same_dir
        command test . -ef "$PWD"
    end
end
function __snapws_hook --on-event fish_prompt
    set -l snapws_status $status
    if not __snapws_same_dir; and test -d "$PWD"
        builtin cd "$PWD" >/dev/null 2>&1
    end
    return $snapws_status
end
"""

#: shell name -> the snippet that hooks it.
SNIPPETS = {"bash": _BASH, "zsh": _ZSH, "fish": _FISH}


def hook_snippet(shell: str) -> str:
    """The hook for ``shell`` (``bash``, ``zsh`` or ``fish``), shell code to
    evaluate in the user's interactive shell.

    Raises MissingArgumentError (exit 2) naming the shells supported for any
    other name."""
    try:
        return SNIPPETS[shell]
    except KeyError:
        raise MissingArgumentError(
            f"no hook for the shell {shell!r}",
            hint="the shells are " + ", ".join(SNIPPETS) + '; e.g. eval "$(snapws hook bash)"',
        ) from None
