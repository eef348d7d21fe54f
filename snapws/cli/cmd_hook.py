"""``snapws hook``."""

from __future__ import annotations

import click

from snapws.shellhook import SNIPPETS, hook_snippet


@click.command("hook")
@click.argument("shell", metavar="|".join(SNIPPETS))
def hook_cmd(shell: str) -> None:
    """Print shell code that makes an interactive shell follow a remounted
    workspace: before each prompt, if the current directory is no longer
    the directory $PWD names (a commit, checkout or reset put a new mount
    there), the shell re-enters $PWD, as `cd .` does. Costs two stat calls
    per prompt; runs nothing else.

    \b
    bash:  eval "$(snapws hook bash)"        in ~/.bashrc
    zsh:   eval "$(snapws hook zsh)"         in ~/.zshrc
    fish:  snapws hook fish | source         in ~/.config/fish/config.fish
    """
    click.echo(hook_snippet(shell), nl=False)


COMMANDS = [hook_cmd]
