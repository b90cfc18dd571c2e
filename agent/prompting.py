"""Prompt templates: text files under prompts/ with `$name` placeholders, rendered strictly.

`string.Template` is used (not str.format) so the braces of Python code pasted into a prompt
(train.py, diffs) need no escaping. Rendering is strict both ways: a placeholder the caller did
not supply is an error, and so is a value the template does not use (a renamed placeholder
would otherwise silently drop text from the prompt).
"""
from __future__ import annotations

from pathlib import Path
from string import Template

DEFAULT_PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"


class PromptError(Exception):
    """A template that cannot be rendered; the message names the file and the placeholders."""


def template_path(prompts_dir: Path, name: str) -> Path:
    return Path(prompts_dir) / f"{name}.md"


def placeholders(prompts_dir: Path, name: str) -> set[str]:
    """The `$name` placeholders a template uses."""
    template = _load(prompts_dir, name)
    if not template.is_valid():
        raise PromptError(f"{template_path(prompts_dir, name)}: a '$' that is not a placeholder "
                          "(write '$$' for a literal dollar sign)")
    return set(template.get_identifiers())


def render(prompts_dir: Path, name: str, **values: object) -> str:
    """Render prompts/<name>.md with exactly the placeholders it uses."""
    path = template_path(prompts_dir, name)
    wanted = placeholders(prompts_dir, name)
    missing = sorted(wanted - set(values))
    unused = sorted(set(values) - wanted)
    if missing or unused:
        parts = []
        if missing:
            parts.append(f"placeholders not supplied: {', '.join('$' + m for m in missing)}")
        if unused:
            parts.append(f"values the template does not use: {', '.join(unused)}")
        raise PromptError(f"{path}: " + "; ".join(parts))
    text = _load(prompts_dir, name).substitute({k: str(v) for k, v in values.items()})
    return text.rstrip("\n")


def _load(prompts_dir: Path, name: str) -> Template:
    path = template_path(prompts_dir, name)
    try:
        return Template(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PromptError(f"{path}: prompt template not found") from None
