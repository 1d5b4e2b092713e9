"""The small markdown of the policy texts, as a clean plain body and safe HTML.

Operators write policies with a little markdown (``**bold**``, ``*italics*``,
```code```, ``- lists``, ``[links](https://…)``). Element and most Matrix apps
render only ``formatted_body`` HTML and show ``body`` as it is, so a message
carries both: HTML for the apps that render it, and a plain body without
markers for notifications, screen readers and apps that do not.

Everything that is not one of those markers is escaped: a policy text (or a
pseudonym inside one) can never inject HTML. Links are kept only for
``https://`` and ``matrix.to`` addresses.
"""

from __future__ import annotations

import html
import re

#: What a phone screen holds comfortably in one message.
PART_CHARS = 600

_CODE = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
_ITALIC = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_UNDERSCORE = re.compile(r"(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])")
_LINK = re.compile(r"\[([^\]\n]+)\]\((https://[^\s()<>\"']+)\)")
_BULLET = re.compile(r"^\s*[-*] (.*)$")
_NUMBERED = re.compile(r"^\s*\d{1,3}[.)] (.*)$")
_HEADING = re.compile(r"^#{1,6} (.*)$")
_LINK_MARK = re.compile("\x01(\\d+)\x01")
_CODE_MARK = re.compile("\x00(\\d+)\x00")


def has_markup(text: str) -> bool:
    """True when ``text`` uses any marker this module renders."""
    if any(p.search(text) for p in (_CODE, _BOLD, _ITALIC, _UNDERSCORE, _LINK)):
        return True
    return any(_BULLET.match(line) or _HEADING.match(line) for line in text.splitlines())


def to_plain(text: str) -> str:
    """``text`` without inline markers: what a notification or a plain client shows."""
    out = []
    for line in text.split("\n"):
        heading = _HEADING.match(line)
        if heading:
            line = heading.group(1)
        bullet = _BULLET.match(line)
        if bullet:
            line = "• " + bullet.group(1)
        # Most lines carry no marker at all: a pattern runs only where its marker is.
        if "](" in line:
            line = _LINK.sub(lambda m: f"{m.group(1)} ({m.group(2)})", line)
        if "`" in line:
            line = _CODE.sub(r"\1", line)
        if "*" in line:
            line = _BOLD.sub(r"\1", line)
            line = _ITALIC.sub(r"\1", line)
        if "_" in line:
            line = _UNDERSCORE.sub(r"\1", line)
        out.append(line)
    return "\n".join(out)


def _inline(line: str) -> str:
    """One line to HTML: escaped first, then the markers (which escaping leaves alone)."""
    codes: list[str] = []

    def keep_code(m: re.Match[str]) -> str:
        codes.append(f"<code>{html.escape(m.group(1), quote=False)}</code>")
        return f"\x00{len(codes) - 1}\x00"

    links: list[str] = []

    def keep_link(m: re.Match[str]) -> str:
        label = html.escape(m.group(1), quote=False)
        links.append(f'<a href="{html.escape(m.group(2), quote=True)}">{label}</a>')
        return f"\x01{len(links) - 1}\x01"

    if "`" in line:
        line = _CODE.sub(keep_code, line)
    if "](" in line:
        line = _LINK.sub(keep_link, line)
    line = html.escape(line, quote=False)
    if "*" in line:
        line = _BOLD.sub(r"<strong>\1</strong>", line)
        line = _ITALIC.sub(r"<em>\1</em>", line)
    if "_" in line:
        line = _UNDERSCORE.sub(r"<em>\1</em>", line)
    if links:
        line = _LINK_MARK.sub(lambda m: links[int(m.group(1))], line)
    if codes:
        line = _CODE_MARK.sub(lambda m: codes[int(m.group(1))], line)
    return line


def to_html(text: str) -> str:
    """``text`` as Matrix ``formatted_body`` HTML: paragraphs, lists, inline markers."""
    blocks: list[str] = []
    for para in re.split(r"\n\s*\n", text.strip("\n")):
        blocks.extend(_paragraph_html(para.split("\n")))
    return "".join(blocks)


def _paragraph_html(lines: list[str]) -> list[str]:
    """One paragraph: runs of plain lines become ``<p>``, runs of list items a list."""
    blocks: list[str] = []
    run: list[str] = []
    run_tag = "p"
    for line in [*lines, None]:
        heading = _HEADING.match(line) if line is not None else None
        bullet = _BULLET.match(line) if line is not None else None
        numbered = _NUMBERED.match(line) if line is not None else None
        tag = "ul" if bullet else "ol" if numbered else "h" if heading else "p"
        if run and (line is None or tag != run_tag or tag == "h"):
            if run_tag == "p":
                blocks.append("<p>" + "<br>".join(run) + "</p>")
            elif run_tag == "h":
                blocks.append("<p><strong>" + "".join(run) + "</strong></p>")
            else:
                blocks.append(f"<{run_tag}>" + "".join(run) + f"</{run_tag}>")
            run = []
        if line is None:
            break
        run_tag = tag
        found = heading or bullet or numbered
        inner = _inline(found.group(1) if found else line)
        run.append(f"<li>{inner}</li>" if tag in ("ul", "ol") else inner)
    return blocks


def split_parts(text: str, limit: int = PART_CHARS) -> list[str]:
    """``text`` cut into messages of at most ``limit`` characters.

    Cuts fall between paragraphs where possible (a heading starts a new part),
    then between lines, and only as a last resort inside a line (at a space).
    """
    paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    pieces: list[str] = []
    for para in paragraphs:
        if len(para) <= limit:
            pieces.append(para)
            continue
        pieces.extend(_split_lines(para, limit))
    parts: list[str] = []
    for piece in pieces:
        starts_section = bool(_BOLD.match(piece) or _HEADING.match(piece))
        if parts and not starts_section and len(parts[-1]) + 2 + len(piece) <= limit:
            parts[-1] = parts[-1] + "\n\n" + piece
        else:
            parts.append(piece)
    return parts


def _split_lines(para: str, limit: int) -> list[str]:
    out: list[str] = []
    for line in para.split("\n"):
        while len(line) > limit:
            cut = line.rfind(" ", 0, limit)
            cut = cut if cut > 0 else limit
            out.append(line[:cut])
            line = line[cut:].lstrip()
        if out and len(out[-1]) + 1 + len(line) <= limit:
            out[-1] = out[-1] + "\n" + line
        else:
            out.append(line)
    return out
