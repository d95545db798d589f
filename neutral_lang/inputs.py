"""Reading prompts from the command line's inputs: text, prompt files, stdin and images.

Every input is sniffed by its first bytes, the same way for a file and for stdin:

- ``\\x89PNG...``: an image; the A1111 ``parameters`` text chunk (``tEXt``, ``zTXt`` or ``iTXt``);
- ``\\xff\\xd8\\xff`` (JPEG) or ``RIFF....WEBP`` (WebP): an image; A1111 keeps ``parameters`` in the
  EXIF ``UserComment`` tag (read with Pillow's EXIF parser);
- anything else: UTF-8 text (a byte-order mark is dropped), read as a prompt file
  (:mod:`neutral_lang.prompt_file`): one prompt per line.

Every read is bounded (issue 14): at most :func:`max_input_bytes` bytes of text from a file or
stdin, of each text chunk, and of each decompressed chunk (a streaming inflate with a cap, so a
decompression bomb stops at the limit); image data is skipped with ``seek`` where the file allows
it and otherwise counted against the same limit. The limit is ``--max-input-size`` or the
environment variable ``NEUTRAL_LANG_MAX_INPUT`` (e.g. ``64M``); default 32 MiB.

Everything here is torch-free and imports Pillow only for a JPEG or WebP input.
"""

from __future__ import annotations

import bisect
import io
import os
import re
import struct
import sys
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import BinaryIO

__all__ = [
    "InputError", "Source", "LineIndex", "read_input", "read_text_input", "read_whole_input", "png_text_chunks", "image_parameters",
    "positive_prompt", "max_input_bytes", "parse_size", "looks_like_path", "escape_controls",
    "DEFAULT_MAX_INPUT", "MAX_INPUT_ENV",
]

DEFAULT_MAX_INPUT = 32 * 2**20
MAX_INPUT_ENV = "NEUTRAL_LANG_MAX_INPUT"

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")


class InputError(Exception):
    """An input that cannot be read (missing file, not UTF-8, over the size limit, an image without
    parameters): the command line exits 2 with this one-line message."""


# ---------------------------------------------------------------------------------------------
# Sizes


def parse_size(text: str) -> int:
    """Bytes from ``"1048576"``, ``"512K"``, ``"64M"``, ``"1G"`` (binary units, case-insensitive).
    Raises ``ValueError`` for anything else, or a size below 1."""
    match = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)(?:i?[bB])?\s*", text or "")
    if not match:
        raise ValueError(f"a size is a number of bytes with an optional K, M or G (e.g. 64M), not {text!r}")
    value = int(match.group(1)) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[match.group(2).lower()]
    if value < 1:
        raise ValueError(f"a size limit must be at least 1 byte, not {text!r}")
    return value


def max_input_bytes(option: str | None = None) -> int:
    """The read limit: ``option`` (``--max-input-size``), else ``$NEUTRAL_LANG_MAX_INPUT``, else
    :data:`DEFAULT_MAX_INPUT`. Raises :class:`InputError` for a size that does not read."""
    for where, text in (("--max-input-size", option), (MAX_INPUT_ENV, os.environ.get(MAX_INPUT_ENV))):
        if text:
            try:
                return parse_size(text)
            except ValueError as exc:
                raise InputError(f"{where}: {exc}") from None
    return DEFAULT_MAX_INPUT


def _human(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


def _too_large(label: str, what: str, limit: int) -> InputError:
    return InputError(
        f"{label}: {what} is larger than the input limit of {_human(limit)}; "
        f"raise it with --max-input-size SIZE or {MAX_INPUT_ENV}=SIZE (e.g. 256M)"
    )


class _Bounded:
    """A binary stream that refuses to read more than ``limit`` bytes in all. Bytes given back with
    :meth:`unread` are served again first; skips by ``seek`` read nothing and do not count."""

    def __init__(self, stream: BinaryIO, label: str, limit: int):
        self.stream, self.label, self.limit, self.count = stream, label, limit, 0
        self.pushback = b""
        try:
            self.seekable = stream.seekable()
        except (AttributeError, OSError, ValueError):
            self.seekable = False

    def unread(self, data: bytes) -> None:
        self.pushback = data + self.pushback

    def read(self, n: int, what: str = "the input") -> bytes:
        head, self.pushback = self.pushback[:n], self.pushback[n:]
        n -= len(head)
        if n <= 0:
            return head
        if self.count + n > self.limit:
            n = self.limit - self.count + 1  # one byte past the limit tells whether there is more
        data = self.stream.read(n)
        self.count += len(data)
        if self.count > self.limit:
            raise _too_large(self.label, what, self.limit)
        return head + data

    def exact(self, n: int, what: str) -> bytes:
        data = self.read(n, what)
        if len(data) < n:
            raise InputError(f"{self.label}: truncated {what}")
        return data

    def skip(self, n: int, what: str) -> None:
        served = min(n, len(self.pushback))
        self.pushback = self.pushback[served:]
        n -= served
        if n and self.seekable:
            here = self.stream.tell()
            end = self.stream.seek(0, io.SEEK_END)
            if here + n > end:
                raise InputError(f"{self.label}: truncated {what}")
            self.stream.seek(here + n)
            return
        while n > 0:
            block = self.read(min(n, 1 << 16), "the image")
            if not block:
                raise InputError(f"{self.label}: truncated {what}")
            n -= len(block)


# ---------------------------------------------------------------------------------------------
# Sources and positions


class LineIndex:
    """Line starts of a text, computed once: :meth:`line_col` and :meth:`line_bounds` cost
    ``O(log lines)`` each, so a diagnostic's position never rescans the text before it."""

    def __init__(self, text: str):
        self.text = text
        starts = [0]
        find = text.find
        pos = find("\n")
        while pos >= 0:
            starts.append(pos + 1)
            pos = find("\n", pos + 1)
        self.starts = starts

    def line_col(self, pos: int) -> tuple[int, int]:
        """1-based line and column of character offset ``pos`` (clamped into the text)."""
        pos = max(0, min(pos, len(self.text)))
        line = bisect.bisect_right(self.starts, pos)
        return line, pos - self.starts[line - 1] + 1

    def line_bounds(self, pos: int) -> tuple[int, int]:
        """``(start, end)`` offsets of the line holding ``pos``, without its newline."""
        line, _ = self.line_col(pos)
        start = self.starts[line - 1]
        end = self.starts[line] - 1 if line < len(self.starts) else len(self.text)
        return start, end


@dataclass(frozen=True, eq=False)
class Source:
    """One prompt to work on: where it came from and its text.

    ``label`` names it in messages (a path, ``<stdin>``, ``<arg1>``). ``origins[i]`` is
    ``(file line, column offset)`` of the prompt's line ``i + 1`` in the input it was read from
    (a prompt file's line, or the line of the ``parameters`` text), so that positions in messages
    are positions in the file. ``inline`` marks prompt text given as an argument. ``options`` are
    generation settings that came with the prompt: a
    prompt file line's ``--steps 20 ...`` (:mod:`neutral_lang.prompt_file`) or the settings of an
    image's infotext (:mod:`neutral_lang.infotext`). ``parameters`` is an image's whole infotext.
    """

    label: str
    text: str
    origins: tuple[tuple[int, int], ...] = ((1, 0),)
    options: dict = field(default_factory=dict)
    parameters: str | None = None
    inline: bool = False

    @cached_property
    def index(self) -> LineIndex:
        return LineIndex(self.text)

    def position(self, pos: int) -> tuple[int, int]:
        """1-based ``(line, column)`` of offset ``pos`` of :attr:`text` in the input it came from."""
        line, column = self.index.line_col(pos)
        if line <= len(self.origins):
            file_line, offset = self.origins[line - 1]
            return file_line, column + offset
        last_line, _ = self.origins[-1]
        return last_line + line - len(self.origins), column

    @property
    def first_line(self) -> int:
        return self.origins[0][0]


# ---------------------------------------------------------------------------------------------
# Reading


def read_input(path: str, *, limit: int, label: str | None = None) -> list[Source]:
    """The prompts in one input: ``path`` (``"-"``: stdin). A text input is a prompt file (one
    prompt per line); an image gives one prompt, its infotext's positive prompt."""
    if path == "-":
        stream = getattr(sys.stdin, "buffer", None)
        if stream is None:
            raise InputError("stdin is not available")
        return _read_stream(stream, label or "<stdin>", limit)
    if os.path.isdir(path):
        raise InputError(f"{path}: is a folder, not a file")
    try:
        with open(path, "rb") as stream:
            return _read_stream(stream, label or path, limit)
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None


def read_text_input(path: str, *, limit: int) -> tuple[str, str]:
    """``(label, text)`` of one input read whole as UTF-8 text (a BOM dropped), bounded; an image
    gives its whole ``parameters`` infotext. For callers that want a file's text, not its prompts."""
    label, text, _ = read_whole_input(path, limit=limit)
    return label, text


def read_whole_input(path: str, *, limit: int) -> tuple[str, str, bool]:
    """``(label, text, is_image)``: :func:`read_text_input`, and whether the input was an image
    (whose text is its infotext, and which ``fmt -i`` / ``lint --fix`` never write)."""
    label = "<stdin>" if path == "-" else path
    if path == "-":
        return (label, *_text_or_image(_Bounded(sys.stdin.buffer, label, limit), label))
    try:
        with open(path, "rb") as stream:
            return (label, *_text_or_image(_Bounded(stream, label, limit), label))
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None


def _text_or_image(bounded: _Bounded, label: str) -> tuple[str, bool]:
    head = bounded.read(12)
    if head.startswith(PNG_SIGNATURE) or head.startswith(JPEG_SIGNATURE) or _is_webp(head):
        return _image_parameters(bounded, head, label), True
    data = head + bounded.read(bounded.limit)
    return _decode_text(data, label), False


def _read_stream(stream: BinaryIO, label: str, limit: int) -> list[Source]:
    from .prompt_file import read_prompt_file

    text, is_image = _text_or_image(_Bounded(stream, label, limit), label)
    if is_image:
        return [image_source(label, text)]
    return read_prompt_file(text, label)


def image_source(label: str, parameters: str) -> Source:
    """The prompt of an image's infotext, with its settings as ``options`` (see :mod:`.infotext`)."""
    from .infotext import parse

    info = parse(parameters)
    lines = info.prompt.count("\n") + 1
    options = dict(info.settings)
    if info.negative_prompt is not None:
        options["negative_prompt"] = info.negative_prompt
    return Source(label, info.prompt, tuple((n, 0) for n in range(1, lines + 1)), options, parameters)


def _decode_text(data: bytes, label: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{label}: not UTF-8 text (byte {exc.start} is {data[exc.start:exc.start + 1]!r}), "
            "nor a PNG, JPEG or WebP image"
        ) from None


def _is_webp(head: bytes) -> bool:
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP"


def _image_parameters(bounded: _Bounded, head: bytes, label: str) -> str:
    if head.startswith(PNG_SIGNATURE):
        chunks = _png_chunks(bounded, head, label, stop_at="parameters")
        if "parameters" not in chunks:
            raise InputError(f"{label}: PNG without an A1111 'parameters' text chunk")
        return chunks["parameters"]
    exif = _jpeg_exif(bounded, head, label) if head.startswith(JPEG_SIGNATURE) else _webp_exif(bounded, head, label)
    kind = "JPEG" if head.startswith(JPEG_SIGNATURE) else "WebP"
    if exif is None:
        raise InputError(f"{label}: {kind} without EXIF data, so without A1111 parameters")
    text = _user_comment(exif, label)
    if text is None:
        raise InputError(f"{label}: {kind} without an A1111 EXIF UserComment (its parameters)")
    return text


def image_parameters(data: bytes, *, label: str = "<image>", limit: int = DEFAULT_MAX_INPUT) -> str:
    """A1111's ``parameters`` infotext of a PNG, JPEG or WebP image given as bytes."""
    bounded = _Bounded(io.BytesIO(data), label, limit)
    head = bounded.read(12)
    if not (head.startswith(PNG_SIGNATURE) or head.startswith(JPEG_SIGNATURE) or _is_webp(head)):
        raise InputError(f"{label}: not a PNG, JPEG or WebP image")
    return _image_parameters(bounded, head, label)


# --- PNG --------------------------------------------------------------------------------------


def png_text_chunks(data: bytes, *, limit: int = DEFAULT_MAX_INPUT) -> dict[str, str]:
    """The ``tEXt``, ``zTXt`` and ``iTXt`` chunks of a PNG, keyword -> text (first one wins).

    The chunk layout of the PNG spec (section 5): length, type, data, CRC; CRCs are not checked.
    Each chunk and each inflated text is bounded by ``limit`` bytes, and so is their sum. Raises
    :class:`InputError` for a file that is not a PNG, a truncated or damaged chunk, or a text over
    the limit.
    """
    if not data.startswith(PNG_SIGNATURE):
        raise InputError("not a PNG file")
    bounded = _Bounded(io.BytesIO(data), "<png>", len(data) + 1)
    return _png_chunks(bounded, bounded.read(len(PNG_SIGNATURE)), "PNG", text_limit=limit)


def _png_chunks(bounded: _Bounded, head: bytes, label: str, *, stop_at: str | None = None,
                text_limit: int | None = None) -> dict[str, str]:
    limit = bounded.limit if text_limit is None else text_limit
    bounded.unread(head[len(PNG_SIGNATURE):])  # what the sniffer read past the signature
    out: dict[str, str] = {}
    inflated = 0
    while True:
        header = bounded.read(8, "the PNG")
        if not header:
            break  # no IEND: tolerated, as image viewers do
        if len(header) < 8:
            raise InputError(f"{label}: truncated PNG chunk header")
        length, kind = struct.unpack(">I4s", header)
        if length > 0x7FFFFFFF:
            raise InputError(f"{label}: damaged PNG chunk (length {length})")
        if kind == b"IEND":
            break
        if kind not in _TEXT_CHUNKS:
            bounded.skip(length + 4, "PNG chunk")
            continue
        if length > limit:
            raise _too_large(label, f"a PNG {kind.decode()} chunk of {length} bytes", limit)
        body = bounded.exact(length, "PNG text chunk")
        bounded.exact(4, "PNG chunk")  # CRC
        key, value, size = _png_text(body, kind, label, limit - inflated)
        inflated += size
        out.setdefault(key, value)
        if stop_at is not None and key == stop_at:
            break
    return out


def _png_text(body: bytes, kind: bytes, label: str, budget: int) -> tuple[str, str, int]:
    """Keyword, text and decoded size of one text chunk; inflating at most ``budget`` bytes."""
    key, sep, rest = body.partition(b"\0")
    if not sep:
        raise InputError(f"{label}: damaged PNG text chunk (no keyword)")
    try:
        if kind == b"tEXt":
            raw = rest
            value = raw.decode("latin-1")
        elif kind == b"zTXt":  # compression method byte, then zlib data
            raw = _inflate(rest[1:], label, budget)
            value = raw.decode("latin-1")
        else:  # iTXt: compression flag, method, language\0, translated keyword\0, text
            if len(rest) < 2:
                raise InputError(f"{label}: damaged PNG iTXt chunk")
            compressed, rest = rest[0], rest[2:]
            _, _, rest = rest.partition(b"\0")
            _, _, text = rest.partition(b"\0")
            raw = _inflate(text, label, budget) if compressed else text
            value = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{label}: damaged PNG text chunk ({exc.reason})") from None
    if len(raw) > budget:
        raise InputError(
            f"{label}: the PNG's text chunks are larger than the input limit; "
            f"raise it with --max-input-size SIZE or {MAX_INPUT_ENV}=SIZE"
        )
    return key.decode("latin-1"), value, len(raw)


def _inflate(data: bytes, label: str, budget: int) -> bytes:
    """zlib data inflated to at most ``budget`` bytes: a bomb stops at the cap, not in memory."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, budget + 1)
    except zlib.error as exc:
        raise InputError(f"{label}: damaged PNG text chunk ({exc})") from None
    if len(out) > budget or inflater.unconsumed_tail:
        raise InputError(
            f"{label}: a compressed PNG text chunk inflates past the input limit of {_human(budget)}; "
            f"raise it with --max-input-size SIZE or {MAX_INPUT_ENV}=SIZE"
        )
    if not inflater.eof:
        raise InputError(f"{label}: damaged PNG text chunk (truncated compressed data)")
    return out


# --- JPEG and WebP: the EXIF block ------------------------------------------------------------


def _jpeg_exif(bounded: _Bounded, head: bytes, label: str) -> bytes | None:
    """The TIFF data of the first ``APP1 Exif`` segment (JPEG markers, ITU T.81 annex B)."""
    bounded.unread(head[2:])  # after SOI
    while True:
        if bounded.read(1, "the JPEG") != b"\xff":
            return None  # not at a marker: no EXIF before the image data
        marker = bounded.exact(1, "JPEG marker")
        while marker == b"\xff":  # fill bytes
            marker = bounded.exact(1, "JPEG marker")
        code = marker[0]
        if code in (0xD9, 0xDA):  # end of image, start of scan: EXIF comes before these
            return None
        if code == 0x01 or 0xD0 <= code <= 0xD8:
            continue
        (length,) = struct.unpack(">H", bounded.exact(2, "JPEG segment"))
        if length < 2:
            raise InputError(f"{label}: damaged JPEG segment")
        if code != 0xE1:
            bounded.skip(length - 2, "JPEG segment")
            continue
        body = bounded.exact(length - 2, "JPEG segment")
        if body.startswith(b"Exif\0\0"):
            return body[6:]


def _webp_exif(bounded: _Bounded, head: bytes, label: str) -> bytes | None:
    """The data of the ``EXIF`` chunk of a WebP (RIFF container)."""
    del head  # the RIFF header: the chunks follow it
    while True:
        header = bounded.read(8, "the WebP")
        if len(header) < 8:
            return None
        kind, size = header[:4], struct.unpack("<I", header[4:])[0]
        padded = size + (size & 1)
        if kind != b"EXIF":
            bounded.skip(padded, "WebP chunk")
            continue
        body = bounded.exact(size, "WebP EXIF chunk")
        return body[6:] if body.startswith(b"Exif\0\0") else body


def _user_comment(tiff: bytes, label: str) -> str | None:
    """The EXIF ``UserComment`` (tag 0x9286 in the Exif IFD), decoded by its 8-byte character code
    (EXIF 2.3, 4.6.5): ``UNICODE`` is UTF-16, in the byte order its text shows (A1111 writes it
    big-endian through piexif), ``ASCII`` and undefined codes are read as UTF-8."""
    try:
        from PIL import Image
    except ModuleNotFoundError:
        raise InputError(
            f"{label}: reading a JPEG or WebP needs Pillow: pip install pillow "
            '(or pip install "neutral-lang[diffusers]")'
        ) from None
    import warnings

    exif = Image.Exif()
    try:
        with warnings.catch_warnings():  # Pillow warns about each damaged tag; the result says enough
            warnings.simplefilter("ignore")
            exif.load(tiff)
            raw = exif.get_ifd(0x8769).get(0x9286)
    except Exception as exc:  # Pillow raises several types on a damaged IFD
        raise InputError(f"{label}: damaged EXIF data ({type(exc).__name__})") from None
    if raw is None:
        return None
    if isinstance(raw, str):
        return raw
    code, body = bytes(raw[:8]), bytes(raw[8:])
    if code == b"UNICODE\0":
        if body[:2] in (b"\xfe\xff", b"\xff\xfe"):
            return body.decode("utf-16")
        # ASCII-heavy UTF-16 has its zero bytes first (big-endian) or second (little-endian)
        even, odd = body[0::2].count(0), body[1::2].count(0)
        order = "utf-16-be" if even > odd or (even == odd and tiff[:2] == b"MM") else "utf-16-le"
        return body.decode(order, errors="replace")
    return body.rstrip(b"\0").decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------------------------
# A1111 parameters and inline text


def positive_prompt(parameters: str) -> str:
    """The positive prompt of A1111's ``parameters`` text: the lines before the one starting with
    ``Negative prompt:``, or (no negative prompt) before the last line starting with ``Steps:``.
    A prefix of ``parameters``, so offsets into it are offsets into the chunk text."""
    from .infotext import split

    return split(parameters)[0]


_PATH_SUFFIX = re.compile(r"\.(txt|prompts?|png|jpe?g|webp|json|csv|md)$", re.IGNORECASE)


def looks_like_path(arg: str) -> bool:
    """Whether a command-line argument that is not an existing file looks like a file name rather
    than prompt text: no whitespace, and a path separator or a file suffix (``.txt``, ``.png``...)."""
    if not arg or any(c.isspace() for c in arg):
        return False
    return "/" in arg or "\\" in arg or bool(_PATH_SUFFIX.search(arg))


# ---------------------------------------------------------------------------------------------
# Terminal output


def _control_picture(c: str) -> str:
    code = ord(c)
    if code < 0x20:
        return chr(0x2400 + code)  # U+2400..U+241F: the control pictures, one cell each
    if code == 0x7F:
        return "\u2421"
    return "\ufffd"


_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def escape_controls(text: str, *, keep_newlines: bool = True) -> str:
    """``text`` safe for a terminal: C0 and C1 control characters (ESC, CSI, BEL, ...) and bidi
    overrides become one visible character each (the Unicode control pictures, or U+FFFD), so a
    prompt read from an image can neither rewrite the screen nor move a caret line's columns.
    Newlines stay when ``keep_newlines``; tabs are kept."""
    if keep_newlines:
        return _CONTROLS.sub(lambda m: _control_picture(m.group()), text)
    return _CONTROLS.sub(lambda m: _control_picture(m.group()), text).replace("\n", "\u2424")


def escape_json(text: str) -> str:
    """JSON text with C1 controls and bidi overrides written as ``\\uXXXX`` escapes (``json.dumps``
    escapes C0 itself): the same data, safe to print."""
    return _CONTROLS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def caret_excerpt(source: Source, pos: int, end: int | None = None, *, width: int = 72) -> str:
    """:func:`neutral_lang.errors.caret_excerpt` for a diagnostic, in time independent of ``pos``:
    only a window around the position is handed to it, and the result is made terminal-safe."""
    from .errors import caret_excerpt as excerpt

    text = source.text
    start, stop = source.index.line_bounds(pos)
    lo = max(start, pos - 2 * width)
    hi = min(stop, pos + 2 * width)
    shown = excerpt(text[lo:hi], pos - lo, None if end is None else min(end, hi) - lo, width=width)
    line, carets = shown.split("\n", 1)
    # the window's edges are not the line's: mark a cut the windowed call could not see
    if lo > start and not line.startswith("..."):
        line, carets = "..." + line, "   " + carets
    if hi < stop and not line.endswith("..."):
        line += "..."
    return escape_controls(line, keep_newlines=False) + "\n" + carets
