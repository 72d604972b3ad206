"""The conversation text of a request body, whatever the wire.

`prompt_view` reads OpenAI chat (`messages`, string or content-part lists), legacy
completions (`prompt`), OpenAI Responses (`input` string or item list, plus
`instructions`), Anthropic messages (`system` string or blocks, `messages` with
content blocks) and Gemini (`contents[].parts[].text`, `systemInstruction`). It keeps
what a request classifier needs: the system text, the last thing the user wrote, how
long the conversation is and whether it carries media. It never raises: a body of an
unexpected shape yields whatever text could be found, possibly none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["PromptView", "conversation", "prompt_view"]


@dataclass(frozen=True, slots=True)
class PromptView:
    """What a classifier needs from a request: system text, last user turn, sizes, media."""

    system: str
    """System/developer instructions, joined with newlines."""
    last_user: str
    """Text of the last message the user wrote (tool results are not the user writing)."""
    turns: int
    """Conversation messages other than system ones (user, assistant, tool)."""
    total_chars: int
    """Characters of text in the whole prompt: system, every turn, tool results."""
    has_media: bool
    """Whether any image, audio, document or file part is present."""


_EMPTY = PromptView(system="", last_user="", turns=0, total_chars=0, has_media=False)

_SYSTEM_ROLES = frozenset({"system", "developer"})
_USER_ROLES = frozenset({"user", "human"})
# Parts carrying binary data or a reference to it, on any wire.
MEDIA_TYPES = frozenset(
    {
        "image",
        "image_url",
        "input_image",
        "image_file",
        "audio",
        "input_audio",
        "file",
        "input_file",
        "video",
    }
)
"""Content-part types that carry media (the budget estimate also counts Anthropic documents)."""
MEDIA_KEYS = ("inlineData", "inline_data", "fileData", "file_data")
"""Gemini part keys that carry media."""
# Parts whose text is another party's output fed back in, not the user writing.
_TOOL_TYPES = frozenset({"tool_result", "function_call_output", "tool_use", "function_call"})
# Model-internal text sent back for continuity: neither the user's words nor prompt the
# user wrote; its size still counts as context.
_SKIP_TEXT_TYPES = frozenset({"thinking", "redacted_thinking", "reasoning"})
# Far above any real conversation; bounds the work on a hostile or cyclic body.
_MAX_PARTS = 20_000


class _Walk:
    """Accumulates text while visiting one body; a bounded, non-recursive-in-depth walk."""

    __slots__ = ("budget", "chars", "media")

    def __init__(self) -> None:
        self.chars = 0
        self.media = False
        self.budget = _MAX_PARTS

    def content(self, value: Any, out: list[str] | None) -> None:
        """Add the text of a message's content (string, part, list of parts) to `out`."""
        if isinstance(value, str):
            if value:
                self.chars += len(value)
                if out is not None:
                    out.append(value)
            return
        if isinstance(value, Mapping):
            self.part(value, out)
            return
        if isinstance(value, (list, tuple)):
            for item in value:
                self.budget -= 1
                if self.budget < 0:
                    return
                if isinstance(item, str):
                    if item:
                        self.chars += len(item)
                        if out is not None:
                            out.append(item)
                elif isinstance(item, Mapping):
                    self.part(item, out)
                elif isinstance(item, (list, tuple)):
                    # Gemini's SDK-style list of strings or nested lists: one level only.
                    for sub in item:
                        if isinstance(sub, str) and sub:
                            self.chars += len(sub)
                            if out is not None:
                                out.append(sub)

    def part(self, part: Mapping, out: list[str] | None) -> None:
        """Add one content part/block: text, media, tool result, document, Gemini part."""
        kind = part.get("type")
        if not isinstance(kind, str):
            kind = None  # an unhashable "type" would fail the set lookups below
        if kind in MEDIA_TYPES:
            self.media = True
            return
        for key in MEDIA_KEYS:
            if key in part:
                self.media = True
                return
        if kind in _SKIP_TEXT_TYPES:
            text = part.get("thinking") or part.get("text")
            if isinstance(text, str):
                self.chars += len(text)
            return
        if kind in _TOOL_TYPES or "functionResponse" in part or "functionCall" in part:
            # Counted as context, kept out of the user's words.
            self._tool(part)
            return
        if kind == "document":
            self._document(part, out)
            return
        text = part.get("text")
        if isinstance(text, str):
            if text:
                self.chars += len(text)
                if out is not None:
                    out.append(text)
            return
        if "parts" in part:
            # A Gemini Content object where a part was expected (systemInstruction, odd lists).
            self.content(part.get("parts"), out)
        elif "content" in part:
            self.content(part.get("content"), out)

    def _document(self, part: Mapping, out: list[str] | None) -> None:
        """Anthropic document block: plain-text sources are text, others are media."""
        source = part.get("source")
        if isinstance(source, Mapping):
            kind = source.get("type")
            if kind == "text" and isinstance(source.get("data"), str):
                self.content(source["data"], out)
                return
            if kind == "content":
                self.content(source.get("content"), out)
                return
        self.media = True

    def _tool(self, part: Mapping) -> None:
        """Count a tool call or result's text as context only."""
        for key in ("content", "output", "arguments", "input", "functionResponse", "args"):
            value = part.get(key)
            if isinstance(value, str):
                self.chars += len(value)
            elif isinstance(value, (list, tuple)):
                self.content(value, None)
            elif isinstance(value, Mapping):
                self.chars += self._size(value)

    def _size(self, root: Mapping) -> int:
        """Characters of the strings in structured tool input/output (JSON arguments)."""
        total = 0
        stack: list[Any] = [root]
        while stack and self.budget > 0:
            node = stack.pop()
            self.budget -= 1
            values = node.values() if isinstance(node, Mapping) else node
            for value in values:
                if isinstance(value, str):
                    total += len(value)
                elif isinstance(value, (Mapping, list, tuple)):
                    stack.append(value)
        return total


def _system_text(value: Any, walk: _Walk) -> list[str]:
    """Text of a system field: string, list of blocks, Gemini Content, or string list."""
    out: list[str] = []
    walk.content(value, out)
    return out


def _messages(items: Any, walk: _Walk, system: list[str]) -> tuple[list[str], int]:
    """Walk a list of chat messages / Responses items / Gemini contents.

    Returns the last user message's text parts and the number of non-system turns.
    """
    if isinstance(items, str):
        walk.content(items, None)
        return [items], 1
    if isinstance(items, Mapping):
        items = (items,)
    if not isinstance(items, (list, tuple)):
        return [], 0
    last_user: list[str] = []
    turns = 0
    for item in items:
        walk.budget -= 1
        if walk.budget < 0:
            break
        if isinstance(item, str):
            # A bare string in a message list: Gemini SDK style, the user speaking.
            turns += 1
            walk.content(item, None)
            if item:
                last_user = [item]
            continue
        if not isinstance(item, Mapping):
            continue
        role = item.get("role")
        if not isinstance(role, str):
            role = None
        if role in _SYSTEM_ROLES:
            walk.content(item.get("content"), system)
            continue
        kind = item.get("type")
        if isinstance(kind, str) and (kind in _TOOL_TYPES or kind in _SKIP_TEXT_TYPES):
            # Responses items: function calls/outputs are context only; reasoning items are
            # the model's own notes, not a turn of the conversation.
            turns += kind in _TOOL_TYPES
            walk.part(item, None)
            continue
        turns += 1
        if "parts" in item:
            content = item.get("parts")
        elif "content" in item:
            content = item.get("content")
        else:
            # A content part where a message was expected (e.g. Responses input_text).
            content = item
        is_user = role in _USER_ROLES or role is None
        if is_user:
            media_before = walk.media
            texts: list[str] = []
            walk.content(content, texts)
            # A user message of only tool results is the loop going on, not a new ask:
            # the user's last words stay those of the message before.
            if texts or walk.media != media_before:
                last_user = texts
        else:
            walk.content(content, None)
            if role == "assistant" and isinstance(item.get("tool_calls"), (list, tuple)):
                for call in item["tool_calls"]:
                    fn = call.get("function") if isinstance(call, Mapping) else None
                    if isinstance(fn, Mapping) and isinstance(fn.get("arguments"), str):
                        walk.chars += len(fn["arguments"])
    return last_user, turns


def prompt_view(body: Mapping | None) -> PromptView:
    """The system text, last user turn, turn count, size and media flag of a request body."""
    if not isinstance(body, Mapping):
        return _EMPTY
    walk = _Walk()
    system: list[str] = []
    last_user: list[str] = []
    turns = 0
    try:
        for key in ("system", "instructions", "systemInstruction", "system_instruction"):
            value = body.get(key)
            if value is not None:
                system.extend(_system_text(value, walk))
        for key in ("messages", "input", "contents"):
            value = body.get(key)
            if value is None:
                continue
            if key == "input" and isinstance(value, (list, tuple)) and value:
                first = value[0]
                if isinstance(first, int) or (
                    isinstance(first, (list, tuple)) and first and isinstance(first[0], int)
                ):
                    continue  # token ids (embeddings): no text to read
            users, count = _messages(value, walk, system)
            turns += count
            if users:
                last_user = users
            break
        else:
            prompt = body.get("prompt")
            if isinstance(prompt, str):
                walk.content(prompt, None)
                last_user, turns = [prompt], 1
            elif isinstance(prompt, (list, tuple)):
                # Legacy completions accept a batch of prompts: each is its own ask, so
                # the longest stands for the call.
                texts = [p for p in prompt if isinstance(p, str)]
                walk.content(texts, None)
                if texts:
                    last_user, turns = [max(texts, key=len)], 1
    except Exception:
        # An exotic Mapping that fails on access: keep what was read so far.
        pass
    return PromptView(
        system="\n".join(system),
        last_user="\n".join(last_user),
        turns=turns,
        total_chars=walk.chars,
        has_media=walk.media,
    )


# --- the conversation turn by turn (for scorers that read more than the last turn) ---------

_ASSISTANT_ROLES = frozenset({"assistant", "model", "bot", "ai"})


def _turn_list(items: Any, walk: _Walk, out: list[tuple[str, str]]) -> None:
    """Append (role, text) for each user/assistant message of a message list."""
    if isinstance(items, str):
        if items:
            out.append(("user", items))
        return
    if isinstance(items, Mapping):
        items = (items,)
    if not isinstance(items, (list, tuple)):
        return
    for item in items:
        walk.budget -= 1
        if walk.budget < 0:
            return
        if isinstance(item, str):
            if item:
                out.append(("user", item))
            continue
        if not isinstance(item, Mapping):
            continue
        role = item.get("role")
        if not isinstance(role, str):
            role = None
        kind = item.get("type")
        if (
            role in _SYSTEM_ROLES
            or role in ("tool", "function")
            or (isinstance(kind, str) and (kind in _TOOL_TYPES or kind in _SKIP_TEXT_TYPES))
        ):
            continue
        if "parts" in item:
            content = item.get("parts")
        elif "content" in item:
            content = item.get("content")
        else:
            content = item
        texts: list[str] = []
        walk.content(content, texts)
        if not texts:
            continue  # tool results only, media only: nobody wrote words here
        speaker = "assistant" if role in _ASSISTANT_ROLES else "user"
        out.append((speaker, "\n".join(texts)))


def conversation(body: Mapping | None) -> tuple[tuple[str, str], ...]:
    """The user and assistant turns of a request body in order, as (role, text) pairs.

    Roles are "user" or "assistant" (Gemini's "model" included); system text, tool calls,
    tool results and reasoning items are left out. Never raises.
    """
    if not isinstance(body, Mapping):
        return ()
    walk = _Walk()
    out: list[tuple[str, str]] = []
    try:
        for key in ("messages", "input", "contents"):
            value = body.get(key)
            if value is None:
                continue
            if key == "input" and isinstance(value, (list, tuple)) and value:
                first = value[0]
                if isinstance(first, int) or (
                    isinstance(first, (list, tuple)) and first and isinstance(first[0], int)
                ):
                    return ()
            _turn_list(value, walk, out)
            return tuple(out)
        prompt = body.get("prompt")
        if isinstance(prompt, str) and prompt:
            out.append(("user", prompt))
        elif isinstance(prompt, (list, tuple)):
            texts = [p for p in prompt if isinstance(p, str) and p]
            if texts:
                out.append(("user", max(texts, key=len)))
    except Exception:
        # An exotic Mapping that fails on access: keep what was read so far.
        pass
    return tuple(out)
