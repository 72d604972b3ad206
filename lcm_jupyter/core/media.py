"""What an inline media part can cost, read from a few bytes of its base64 payload.

Reservations run on every budgeted call, so nothing here decodes a whole image or clip:
`Blob` decodes only the 4-character groups that hold the bytes asked for, so an image's
size costs a few dozen bytes of decoding whatever the file's size (PNG IHDR, GIF screen,
WebP VP8/VP8L/VP8X, BMP, JPEG SOF after a walk over the segment lengths), a WAV or MP3
clip's duration its header and a few frame headers, an MP4/MOV's duration a walk over the
top-level boxes to `moov/mvhd`. PDFs are the exception: their page count is spread over
the file, so a PDF payload is decoded (C speed) and scanned once, object streams included.

Then each provider's documented token rules, at the model family's worst case:

- OpenAI images (platform.openai.com/docs/guides/images-vision, "Calculating costs"):
  tile models bill base + per-tile tokens for the 512 px tiles of the image fitted in
  2048 px and scaled to 768 px on its short side (at most 8 tiles; `low`: base only);
  patch models bill 32 px patches, capped (1,536; 2,500 at `high` and 10,000 at
  `original` on the newest models), times a per-model multiplier.
- Anthropic images (docs.claude.com, "Vision"): about width*height/750 (28 px patches on
  the newest docs) after a resize to the model's native size: 1568 px long edge and about
  1,600 tokens (1.15 MP) up to Claude Opus 4.6, 2576 px and 3.75 MP from Opus 4.7.
- Gemini images (ai.google.dev, "Image understanding" / "Media resolution"): 258 tokens
  up to 384x384 px, else one 258-token tile per crop unit (short side / 1.5), plus one;
  Gemini 3 allots a fixed budget per image by media resolution (280/560/1120/2240).
- PDFs: Anthropic and OpenAI bill each page as an image plus its extracted text
  (Anthropic: 1,500 to 3,000 text tokens a page); Gemini 2 as tiled page images (258 per
  tile, as images), Gemini 3 by media resolution (560 tokens a page by default).
- Audio: OpenAI 10 tokens a second (1 per 100 ms of user audio), Gemini 32 a second.
- Video (Gemini): 263 tokens per frame at 1 fps on Gemini 2 (70 or 280 on Gemini 3) plus
  32 a second of soundtrack; `videoMetadata.fps` and clip offsets are honoured.

Checked in tests/test_reservation_bound.py against the documented figures and against
real recorded usage where the corpus has it (audio on OpenAI, a YouTube video on Gemini;
it holds no image or PDF request). Gemini 2's extra tile per tiled image and its PDF
pages billed as tiled images come from bills reported elsewhere (a 597x566 and a 540x360
JPEG), not from a recording here: the rule is the larger of the two readings.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import struct
import sys
import zlib
from dataclasses import dataclass

__all__ = [
    "Blob",
    "PdfInfo",
    "anthropic_image_tokens",
    "audio_seconds",
    "audio_tokens",
    "gemini_image_tokens",
    "image_size",
    "openai_image_tokens",
    "pdf_info",
    "pdf_page_tokens",
    "video_seconds",
    "video_tokens",
]


def _strict_b64(text: str) -> bytes:
    """Decode base64, refusing anything outside the alphabet (binascii.Error)."""
    if sys.version_info >= (3, 11):
        return binascii.a2b_base64(text, strict_mode=True)  # C speed, no regex pass
    return base64.b64decode(text, validate=True)


# --- base64 payloads -------------------------------------------------------------------

_URLSAFE = str.maketrans("-_", "+/")
# Past this a payload is not scanned whole (PDFs): the caller falls back to a bound from size.
_MAX_SCAN_BYTES = 64 * 1024 * 1024


class Blob:
    """Random access to the bytes of a base64 payload without decoding all of it."""

    __slots__ = ("_end", "_start", "_text", "size")

    def __init__(self, text: str, start: int = 0) -> None:
        end = len(text)
        # Padding and a trailing newline do not hold data.
        while end > start and text[end - 1] in "=\n\r ":
            end -= 1
        self._text = text
        self._start = start
        self._end = end
        chars = end - start
        self.size = chars // 4 * 3 + max(chars % 4 - 1, 0)
        """Decoded length in bytes (exact for an unbroken payload)."""

    def read(self, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) (fewer at the end); b"" when the text is not base64."""
        if offset < 0 or length <= 0 or offset >= self.size:
            return b""
        group = offset // 3
        first = self._start + group * 4
        last = min(self._start + ((offset + length + 2) // 3) * 4, self._end)
        chunk = self._text[first:last]
        if not chunk:
            return b""
        if "-" in chunk or "_" in chunk:  # URL-safe alphabet (Gemini's JSON bytes)
            chunk = chunk.translate(_URLSAFE)
        chunk += "=" * (-len(chunk) % 4)
        try:
            data = _strict_b64(chunk)
        except (binascii.Error, ValueError):
            return b""
        skip = offset - group * 3
        return data[skip : skip + length]

    def key(self) -> tuple[int, int, int, int]:
        """Identifies the payload without keeping it: its text's hash (SipHash with a
        per-process key, computed once per string) and its bounds."""
        return hash(self._text), len(self._text), self._start, self._end

    def all(self) -> bytes:
        """The whole payload (for PDFs); b"" when it is not clean base64 or too large."""
        if self.size > _MAX_SCAN_BYTES:
            return b""
        chunk = self._text[self._start : self._end]
        if "-" in chunk or "_" in chunk:
            chunk = chunk.translate(_URLSAFE)
        chunk += "=" * (-len(chunk) % 4)
        try:
            return _strict_b64(chunk)
        except (binascii.Error, ValueError):
            # Line breaks (MIME-style base64): decode leniently, at a copy's cost.
            try:
                return binascii.a2b_base64(chunk)
            except (binascii.Error, ValueError):
                return b""


# --- images ----------------------------------------------------------------------------

_JPEG_SOF = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xDA)})
_MAX_JPEG_SEGMENTS = 256


def image_size(blob: Blob) -> tuple[int, int] | None:
    """(width, height) from the header of a PNG, GIF, WebP, BMP or JPEG; None otherwise."""
    head = blob.read(0, 32)
    if len(head) < 10:
        return None
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and len(head) >= 24:
        return _positive(*struct.unpack(">II", head[16:24]))
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return _positive(*struct.unpack("<HH", head[6:10]))
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and len(head) >= 30:
        kind = head[12:16]
        if kind == b"VP8X":
            return _positive(
                1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
            )
        if kind == b"VP8L" and head[20] == 0x2F:
            bits = int.from_bytes(head[21:25], "little")
            return _positive((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
        if kind == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
            w, h = struct.unpack("<HH", head[26:30])
            return _positive(w & 0x3FFF, h & 0x3FFF)
        return None
    if head[:2] == b"BM" and len(head) >= 26:
        w, h = struct.unpack("<ii", head[18:26])
        return _positive(abs(w), abs(h))
    if head[:2] == b"\xff\xd8":
        return _jpeg_size(blob)
    return None


def _jpeg_size(blob: Blob) -> tuple[int, int] | None:
    """Walk the JPEG segments by their lengths (EXIF and ICC blocks are skipped, not read)."""
    pos = 2
    for _ in range(_MAX_JPEG_SEGMENTS):
        seg = blob.read(pos, 9)
        if len(seg) < 4 or seg[0] != 0xFF:
            return None
        marker = seg[1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker in _JPEG_SOF:
            if len(seg) < 9:
                return None
            h, w = struct.unpack(">HH", seg[5:9])
            return _positive(w, h)
        if marker == 0xDA:  # start of scan before any frame header: not a JPEG we can read
            return None
        (length,) = struct.unpack(">H", seg[2:4])
        if length < 2:
            return None
        pos += 2 + length
    return None


def _positive(w: int, h: int) -> tuple[int, int] | None:
    return (w, h) if w > 0 and h > 0 else None


# OpenAI image families, first match wins: (pattern, kind, base or patch cap, tile or
# multiplier). Tile models: base + per-tile tokens. Patch models: capped 32 px patches
# times a multiplier (documented: gpt-4.1-mini 1.62, gpt-4.1-nano 2.46, o4-mini 1.72;
# gpt-5-mini/nano are documented at 1.62/2.46 and billed 1.2/1.5, the documented ones are
# kept). Anything newer or unknown takes the dearest current rule (see _openai_default).
_OPENAI_IMAGE_RULES: tuple[tuple[re.Pattern[str], str, float, float], ...] = tuple(
    (re.compile(p), kind, a, b)
    for p, kind, a, b in (
        (r"gpt-4o-mini", "tile", 2833, 5667),
        (r"computer-use", "tile", 65, 129),
        (r"gpt-4\.1-mini", "patch", 1536, 1.62),
        (r"gpt-4\.1-nano", "patch", 1536, 2.46),
        (r"(^|/)(o4-mini|codex-mini)", "patch", 1536, 1.72),
        (r"gpt-5-mini", "patch", 1536, 1.62),
        (r"gpt-5-nano", "patch", 1536, 2.46),
        (r"(^|/)o[13](-pro)?($|-\d)", "tile", 75, 150),
        (r"gpt-4o|gpt-4\.1|gpt-4\.5|gpt-4-turbo|gpt-4-vision|chatgpt-4o", "tile", 85, 170),
        (r"(^|/)gpt-5(-chat|-pro|-codex)?($|-\d{4}|-latest)", "tile", 85, 170),
    )
)
# Newest patch models: 2,500 patches at high detail, 10,000 at "original"; multiplier 1.2
# observed on gpt-5.x, 1.62 kept as the documented small-model figure.
_OPENAI_NEW_PATCHES = 2500
_OPENAI_ORIGINAL_PATCHES = 10_000
_OPENAI_NEW_MULTIPLIER = 1.62


def openai_image_tokens(model: str, size: tuple[int, int] | None, detail: str | None) -> int:
    """Most tokens one image can bill on an OpenAI model (size None: the model's maximum)."""
    detail = detail.lower() if isinstance(detail, str) else "auto"
    name = model.lower()
    for pattern, kind, a, b in _OPENAI_IMAGE_RULES:
        if pattern.search(name):
            if kind == "tile":
                return _tile_tokens(size, int(a), int(b), detail)
            return _patch_tokens(size, int(a), b)
    # Unknown or newer: whichever of the two current rules bills more.
    cap = _OPENAI_ORIGINAL_PATCHES if detail == "original" else _OPENAI_NEW_PATCHES
    return max(
        _tile_tokens(size, 85, 170, "high"), _patch_tokens(size, cap, _OPENAI_NEW_MULTIPLIER)
    )


def _tile_tokens(size: tuple[int, int] | None, base: int, per_tile: int, detail: str) -> int:
    if detail == "low":
        return base
    if size is None:
        return base + 8 * per_tile  # at most 2 x 4 tiles fit 768 x 2048
    w, h = size
    scale = min(1.0, 2048 / max(w, h))
    w1, h1 = w * scale, h * scale
    tiles = 0
    # Scaled down to 768 px on the short side; also counted as if scaled up to it (the
    # docs do not say which), within the 2048 px square.
    for target in (min(1.0, 768 / min(w1, h1)), 768 / min(w1, h1)):
        s = min(target, 2048 / max(w1, h1))
        tiles = max(tiles, math.ceil(w1 * s / 512) * math.ceil(h1 * s / 512))
    return base + min(tiles, 8) * per_tile


def _patch_tokens(size: tuple[int, int] | None, cap: int, multiplier: float) -> int:
    patches = cap if size is None else min(math.ceil(size[0] / 32) * math.ceil(size[1] / 32), cap)
    return math.ceil(patches * multiplier)


# Claude models with the older native size (1568 px, ~1.15 MP); the rest (Opus 4.7 and
# later, and names we do not know) take the high-resolution one (2576 px, 3.75 MP).
_CLAUDE_STANDARD = re.compile(
    r"claude-(instant|2|3)|claude-[a-z]+-4(-[0-6])?($|-\d{8}|-latest|-v\d)|claude-4"
)
_CLAUDE_STANDARD_CAP = 1700  # the docs' largest size (784x1568) is 1,639 tokens
_CLAUDE_HIRES_CAP = 5120  # 3.75 MP / 750 = 5,000


def anthropic_image_tokens(model: str, size: tuple[int, int] | None) -> int:
    """Most tokens one image can bill on a Claude model (size None: the model's maximum)."""
    standard = bool(_CLAUDE_STANDARD.search(model.lower()))
    cap = _CLAUDE_STANDARD_CAP if standard else _CLAUDE_HIRES_CAP
    if size is None:
        return cap
    w, h = size
    long_edge, pixels = (1568, 1.25e6) if standard else (2576, 3.8e6)
    scale = min(1.0, long_edge / max(w, h), math.sqrt(pixels / (w * h)))
    w2, h2 = math.ceil(w * scale), math.ceil(h * scale)
    tokens = max(math.ceil(w2 * h2 / 750), math.ceil(w2 / 28) * math.ceil(h2 / 28))
    return min(cap, math.ceil(tokens * 1.05))  # the docs say "approximately"


# Gemini 3 media resolution budgets: tokens per image or PDF page, and per video frame.
_GEMINI3_IMAGE = {"low": 280, "medium": 560, "high": 1120, "ultra_high": 2240}
_GEMINI3_FRAME = {"low": 70, "medium": 70, "high": 280, "ultra_high": 280}
_GEMINI_TILE = 258
# An image of unknown size on Gemini 2 (a file reference): tiles grow with the aspect
# ratio, so this assumes at most 1:8 (2 x 12 tiles + 1). Not a proven ceiling.
_GEMINI_UNKNOWN_IMAGE = 25 * _GEMINI_TILE


def _gemini_generation(model: str) -> int:
    """2 for Gemini 1.x/2.x and Gemma, 3 for Gemini 3.x, 0 when unknown."""
    m = re.search(r"gemini-(\d+)", model.lower())
    if m is None:
        return 2 if "gemma" in model.lower() else 0
    major = int(m.group(1))
    return 2 if major <= 2 else 3 if major == 3 else 0


def _level(resolution: str | None) -> str | None:
    if not isinstance(resolution, str):
        return None
    text = resolution.lower().replace("media_resolution_", "")
    return text if text in _GEMINI3_IMAGE else None


def _gemini2_tiles(size: tuple[int, int]) -> int:
    w, h = size
    if w <= 384 and h <= 384:
        return 1
    unit = max(1, math.floor(min(w, h) / 1.5))
    # One token block per crop unit, and one more: 597x566 and 540x360 JPEGs were reported
    # billed (2x2+1) and (3x2+1) x 258 by gemini-2.0-flash.
    return math.ceil(w / unit) * math.ceil(h / unit) + 1


def gemini_image_tokens(model: str, size: tuple[int, int] | None, resolution: str | None) -> int:
    """Most tokens one image can bill on a Gemini model."""
    generation = _gemini_generation(model)
    level = _level(resolution)
    gemini3 = _GEMINI3_IMAGE[level or "high"]
    gemini2 = _GEMINI_UNKNOWN_IMAGE if size is None else _gemini2_tiles(size) * _GEMINI_TILE
    if generation == 3:
        return gemini3
    if generation == 2:
        return max(gemini2, _GEMINI3_IMAGE[level]) if level else gemini2
    return max(gemini2, _GEMINI3_IMAGE["ultra_high"])


# --- PDFs --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PdfInfo:
    """What a PDF's bytes say: an upper bound on its pages and its most elongated page."""

    pages: int
    aspect: float
    """Long side over short side of the most elongated MediaBox (1.42 when none is found)."""


_PAGE_RE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")
_COUNT_RE = re.compile(rb"/Count\s+(\d{1,7})")
_BOX_RE = re.compile(rb"/MediaBox\s*\[\s*(-?[\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)")
_OBJSTM_RE = re.compile(rb"/Type\s*/ObjStm")
_A4_ASPECT = 842 / 595
_MAX_OBJSTM = 4096
_MAX_INFLATE = 32 * 1024 * 1024


# A conversation sends its PDFs again with every turn, and reading one decodes it whole
# (about 10 ms a MB here): what the last few said is kept, by `Blob.key`.
_PDF_MEMO: dict[tuple[int, int, int, int], PdfInfo | None] = {}
_PDF_MEMO_SIZE = 64


def pdf_info(blob: Blob) -> PdfInfo | None:
    """Pages and page shape of a base64 PDF; None when its bytes cannot be read."""
    key = blob.key()
    try:
        return _PDF_MEMO[key]
    except KeyError:
        pass
    info = _read_pdf(blob)
    if len(_PDF_MEMO) >= _PDF_MEMO_SIZE:
        _PDF_MEMO.clear()
    _PDF_MEMO[key] = info
    return info


def _read_pdf(blob: Blob) -> PdfInfo | None:
    data = blob.all()
    start = data.find(b"%PDF", 0, 1024)
    if start < 0:
        return None
    texts = [data]
    # Page objects may sit compressed in object streams (PDF 1.5+): inflate those.
    budget = _MAX_INFLATE
    for n, match in enumerate(_OBJSTM_RE.finditer(data)):
        if n >= _MAX_OBJSTM or budget <= 0:
            return None  # too much to read: the caller bounds by size
        body = data.find(b"stream", match.end())
        if body < 0:
            continue
        body += 6
        if data[body : body + 2] == b"\r\n":
            body += 2
        elif data[body : body + 1] in (b"\n", b"\r"):
            body += 1
        end = data.find(b"endstream", body)
        try:
            inflater = zlib.decompressobj()
            inflated = inflater.decompress(data[body : end if end > 0 else None], budget)
        except zlib.error:
            return None  # encrypted or not Flate: pages unknown
        budget -= len(inflated)
        texts.append(inflated)
    pages = 0
    aspect = 1.0
    for text in texts:
        pages += len(_PAGE_RE.findall(text))
        for count in _COUNT_RE.findall(text):
            pages = max(pages, int(count))
        for box in _BOX_RE.findall(text):
            try:
                x0, y0, x1, y1 = (float(v) for v in box)
            except ValueError:
                continue
            w, h = abs(x1 - x0), abs(y1 - y0)
            if w > 0 and h > 0:
                aspect = max(aspect, max(w, h) / min(w, h))
    if pages <= 0:
        return None
    return PdfInfo(pages=pages, aspect=aspect if aspect > 1.0 else _A4_ASPECT)


# Extracted text allowed per page by Anthropic and OpenAI, which bill a PDF page's text on
# top of its image: Anthropic documents 1,500 to 3,000 tokens a page. A typical ceiling,
# not a proven one (a page of 6 pt type holds more).
PDF_TEXT_TOKENS_PER_PAGE = 3000
# Pages one PDF may have per request (Anthropic: 100 for 200k-context models, 600 others;
# OpenAI: 100; Gemini: 1,000).
MAX_PDF_PAGES = {"anthropic": 600, "openai": 100, "google": 1000}


def pdf_page_tokens(provider: str, model: str, aspect: float, resolution: str | None) -> int:
    """Most tokens one PDF page of the given shape can bill."""
    if provider == "anthropic":
        return anthropic_image_tokens(model, None) + PDF_TEXT_TOKENS_PER_PAGE
    if provider == "openai":
        return openai_image_tokens(model, None, "high") + PDF_TEXT_TOKENS_PER_PAGE
    generation = _gemini_generation(model)
    level = _level(resolution)
    gemini3 = _GEMINI3_IMAGE[level or "medium"]
    # A page renders at up to 3072 px; tiles depend on its shape, as for images.
    gemini2 = _gemini2_tiles((3072, max(385, round(3072 * aspect)))) * _GEMINI_TILE
    if generation == 3:
        return gemini3
    if generation == 2:
        return max(gemini2, _GEMINI3_IMAGE[level]) if level else gemini2
    return max(gemini2, _GEMINI3_IMAGE["ultra_high"])


# --- audio and video ---------------------------------------------------------------------

# Bytes per second at the lowest bitrate a clip plausibly has (Opus speech at 6 kbit/s):
# a clip whose header cannot be read lasts at most its size over this.
LOWEST_AUDIO_BYTES_PER_SECOND = 750
# Video: a screen recording can go as low as ~50 kbit/s.
LOWEST_VIDEO_BYTES_PER_SECOND = 6000

_MP3_BITRATES = {
    (1, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (1, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (1, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (2, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (2, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (2, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {1: (44100, 48000, 32000), 2: (22050, 24000, 16000), 25: (11025, 12000, 8000)}


@dataclass(frozen=True, slots=True)
class _Mp3Frame:
    version: int  # 1, 2 or 25 (2.5)
    layer: int
    kbps: int
    rate: int
    length: int
    mono: bool

    @property
    def samples(self) -> int:
        if self.layer == 1:
            return 384
        return 1152 if self.layer == 2 or self.version == 1 else 576


def _mp3_frame(head: bytes) -> _Mp3Frame | None:
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return None
    version = {3: 1, 2: 2, 0: 25}.get((head[1] >> 3) & 3)
    layer = {3: 1, 2: 2, 1: 3}.get((head[1] >> 1) & 3)
    bitrate_index = head[2] >> 4
    rate_index = (head[2] >> 2) & 3
    if version is None or layer is None or bitrate_index in (0, 15) or rate_index == 3:
        return None
    kbps = _MP3_BITRATES[(1 if version == 1 else 2, layer)][bitrate_index]
    rate = _MP3_RATES[version][rate_index]
    padding = (head[2] >> 1) & 1
    if layer == 1:
        length = (12 * kbps * 1000 // rate + padding) * 4
    else:
        factor = 144 if layer == 2 or version == 1 else 72
        length = factor * kbps * 1000 // rate + padding
    return _Mp3Frame(version, layer, kbps, rate, length, (head[3] >> 6) == 3)


def _mp3_seconds(blob: Blob) -> float | None:
    pos = 0
    head = blob.read(0, 10)
    if head[:3] == b"ID3" and len(head) == 10:
        size = (
            (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | head[9] & 0x7F
        )
        pos = 10 + size + (10 if head[5] & 0x10 else 0)
    window = blob.read(pos, 4096)
    first = None
    for i in range(len(window) - 3):
        if window[i] == 0xFF and window[i + 1] & 0xE0 == 0xE0:
            first = _mp3_frame(window[i : i + 4])
            if first is not None:
                pos += i
                break
    if first is None:
        return None
    frame = blob.read(pos, min(first.length, 200))
    # A Xing/Info (LAME) or VBRI header counts the frames: exact duration.
    side = (17 if first.mono else 32) if first.version == 1 else (9 if first.mono else 17)
    tag = frame[4 + side : 8 + side]
    if tag in (b"Xing", b"Info") and len(frame) >= 16 + side:
        (flags,) = struct.unpack(">I", frame[8 + side : 12 + side])
        if flags & 1:
            (frames,) = struct.unpack(">I", frame[12 + side : 16 + side])
            return frames * first.samples / first.rate
    if frame[36:40] == b"VBRI" and len(frame) >= 54:
        (frames,) = struct.unpack(">I", frame[50:54])
        return frames * first.samples / first.rate
    # No frame count: constant bitrate if frames sampled across the file agree, else the
    # lowest bitrate this kind of MP3 can have.
    audio_bytes = blob.size - pos
    lowest = min(k for k in _MP3_BITRATES[(1 if first.version == 1 else 2, first.layer)] if k)
    kbps = first.kbps
    for fraction in (0.25, 0.5, 0.75, 0.95):
        probe = blob.read(pos + int(audio_bytes * fraction), 4096)
        other = None
        for i in range(len(probe) - 3):
            if probe[i] == 0xFF and probe[i + 1] & 0xE0 == 0xE0:
                other = _mp3_frame(probe[i : i + 4])
                if other is not None and (other.version, other.layer, other.rate) == (
                    first.version,
                    first.layer,
                    first.rate,
                ):
                    break
                other = None
        if other is not None and other.kbps != kbps:
            kbps = lowest
            break
    return audio_bytes * 8 / (kbps * 1000)


def _wav_seconds(blob: Blob) -> float | None:
    pos = 12
    byte_rate = 0
    for _ in range(64):
        hdr = blob.read(pos, 8)
        if len(hdr) < 8:
            return None
        kind, size = hdr[:4], struct.unpack("<I", hdr[4:])[0]
        if kind == b"fmt ":
            fmt = blob.read(pos + 8, 16)
            if len(fmt) < 12:
                return None
            byte_rate = struct.unpack("<I", fmt[8:12])[0]
        elif kind == b"data":
            if not byte_rate:
                return None
            # A streamed WAV may say 0 or 0xFFFFFFFF: the payload's size bounds it.
            data = min(size, blob.size - pos - 8) if size else blob.size - pos - 8
            return max(data, 0) / byte_rate
        pos += 8 + size + (size & 1)
    return None


def audio_seconds(blob: Blob) -> float | None:
    """Duration of a WAV or MP3 clip from its headers; None for other formats."""
    head = blob.read(0, 12)
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return _wav_seconds(blob)
    if head[:3] == b"ID3" or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return _mp3_seconds(blob)
    return None


def video_seconds(blob: Blob) -> float | None:
    """Duration of an MP4/MOV (ISO BMFF) from `moov/mvhd`; None for other containers."""
    if blob.read(4, 4) not in (b"ftyp", b"moov", b"free", b"mdat", b"wide", b"skip"):
        return None
    pos = 0
    for _ in range(64):
        hdr = blob.read(pos, 16)
        if len(hdr) < 8:
            return None
        size, kind = struct.unpack(">I", hdr[:4])[0], hdr[4:8]
        header = 8
        if size == 1 and len(hdr) == 16:
            size, header = struct.unpack(">Q", hdr[8:16])[0], 16
        elif size == 0:
            size = blob.size - pos
        if size < header:
            return None
        if kind == b"moov":
            child = pos + header
            end = pos + size
            while child + 8 <= end:
                box = blob.read(child, 40)
                if len(box) < 8:
                    return None
                csize = struct.unpack(">I", box[:4])[0]
                if box[4:8] == b"mvhd":
                    if box[8] == 1 and len(box) >= 40:
                        scale, duration = struct.unpack(">IQ", box[28:40])
                    elif len(box) >= 28:
                        scale, duration = struct.unpack(">II", box[20:28])
                    else:
                        return None
                    return duration / scale if scale else None
                if csize < 8:
                    return None
                child += csize
            return None
        pos += size
    return None


# Tokens per second of audio input.
OPENAI_AUDIO_TOKENS_PER_SECOND = 10
GEMINI_AUDIO_TOKENS_PER_SECOND = 32


def audio_tokens(provider: str, seconds: float) -> int:
    """Most tokens `seconds` of audio input bill: whole seconds (rounded up), and one more."""
    rate = (
        OPENAI_AUDIO_TOKENS_PER_SECOND if provider == "openai" else GEMINI_AUDIO_TOKENS_PER_SECOND
    )
    return math.ceil(seconds - 1e-9) * rate + rate  # one more second: frame rounding


def video_tokens(model: str, seconds: float, fps: float, resolution: str | None) -> int:
    """Most tokens `seconds` of Gemini video input bill, soundtrack included."""
    generation = _gemini_generation(model)
    level = _level(resolution)
    frame = _GEMINI3_FRAME[level or "low"] if generation == 3 else 263
    if generation == 0:
        frame = max(263, _GEMINI3_FRAME["high"])
    whole = math.ceil(seconds - 1e-9)
    frames = math.ceil(whole * max(fps, 0.0)) + 1
    return frames * frame + (whole + 1) * GEMINI_AUDIO_TOKENS_PER_SECOND
