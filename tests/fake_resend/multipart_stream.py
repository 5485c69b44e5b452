"""Request bodies read in bounded pieces, and a streaming multipart/form-data parser.

The fake must take a 200 MB upload without its memory growing, so nothing here ever holds a whole
body: bodies are read CHUNK_SIZE bytes at a time (Content-Length or chunked framing), the parser
keeps at most one piece plus one delimiter length, and file parts go straight to disk. The standard
library has no such parser (`cgi` is deprecated and, like `email`, parses from memory); `email` is
still used for what it does well, parsing header parameters (quoted strings, RFC 2231 `filename*`).
"""

import email.message
import email.utils
import hashlib
import os
import re

CHUNK_SIZE = 64 * 1024
MAX_LINE = 64 * 1024           # chunk-size and trailer lines
MAX_PART_HEADERS = 16 * 1024   # one part's header block
MAX_TRAILER_LINES = 100


class BodyError(Exception):
    """The body does not arrive as its framing announced: the connection cannot be reused."""


class MultipartError(Exception):
    """The body arrived whole but is not well-formed multipart/form-data."""


def iter_body(rfile, headers):
    """Yield the request body (de-chunked) in pieces of at most CHUNK_SIZE bytes.

    A generator even for its header checks, so that every BodyError surfaces while iterating.
    """
    encoding = headers.get("Transfer-Encoding")
    length = headers.get("Content-Length")
    if encoding is not None:
        if encoding.strip().lower() != "chunked":
            raise BodyError(f"unsupported Transfer-Encoding {encoding!r}")
        yield from _iter_chunked(rfile)
    elif length is not None:
        if not re.fullmatch(r"[0-9]{1,18}", length.strip()):
            raise BodyError(f"bad Content-Length {length!r}")
        yield from _iter_exactly(rfile, int(length))


def _iter_exactly(rfile, length):
    remaining = length
    while remaining:
        piece = _read(rfile, min(remaining, CHUNK_SIZE))
        if not piece:
            raise BodyError(f"connection closed after {length - remaining} of {length} bytes")
        remaining -= len(piece)
        yield piece


def _iter_chunked(rfile):
    while True:
        size_line = _readline(rfile)
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BodyError(f"bad chunk size line {size_line[:40]!r}") from None
        if size == 0:
            break
        yield from _iter_exactly(rfile, size)
        if _readline(rfile).strip():
            raise BodyError("chunk data not followed by CRLF")
    for _ in range(MAX_TRAILER_LINES):
        if not _readline(rfile).strip():
            return
    raise BodyError("too many trailer lines")


def _read(rfile, size):
    try:
        return rfile.read(size)
    except OSError as error:  # timeouts and resets alike: the client is gone
        raise BodyError(f"reading the body failed: {error}") from None


def _readline(rfile):
    try:
        line = rfile.readline(MAX_LINE)
    except OSError as error:
        raise BodyError(f"reading the body failed: {error}") from None
    if not line.endswith(b"\n"):
        raise BodyError("chunked body truncated or line too long")
    return line


def form_data_boundary(content_type):
    """The boundary of a multipart/form-data Content-Type, or None for any other type."""
    if not content_type:
        return None
    message = email.message.Message()
    message["content-type"] = content_type
    boundary = message.get_param("boundary")
    if message.get_content_type() != "multipart/form-data" or not isinstance(boundary, str):
        return None
    if not 1 <= len(boundary) <= 70:  # RFC 2046 limit; also keeps the parser's lookbehind small
        return None
    return boundary.encode("latin-1", "replace")


class Part:
    """A received part that is only measured (size, sha256), for parts nobody reads.

    Subclasses keep the content too, up to `limit` bytes; past it they drop what they kept and
    set `too_large`, but keep measuring so that errors can say how big the part really was.
    """

    def __init__(self, name, filename, content_type, limit=None):
        self.name = name
        self.filename = filename
        self.content_type = content_type
        self.limit = limit
        self.size = 0
        self.too_large = False
        self._sha256 = hashlib.sha256()

    @property
    def sha256(self):
        return self._sha256.hexdigest()

    def write(self, data):
        self.size += len(data)
        self._sha256.update(data)
        if self.too_large:
            return
        if self.limit is not None and self.size > self.limit:
            self.too_large = True
            self._discard()
        else:
            self._keep(data)

    def close(self):
        pass

    def _keep(self, data):
        pass

    def _discard(self):
        pass


class TextPart(Part):
    """A form field kept in memory (it is small: `limit` caps it)."""

    def __init__(self, name, filename, content_type, limit):
        super().__init__(name, filename, content_type, limit)
        self._data = bytearray()

    @property
    def text(self):
        """The decoded value, or None when it was too large to keep."""
        return None if self.too_large else self._data.decode("utf-8", "replace")

    def _keep(self, data):
        self._data += data

    def _discard(self):
        self._data = bytearray()


class SpooledPart(Part):
    """Content written to `path` as it arrives; `path` becomes None if it went over `limit`."""

    def __init__(self, name, filename, content_type, path, limit=None):
        super().__init__(name, filename, content_type, limit)
        self.path = path
        self._file = open(path, "wb")

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    def _keep(self, data):
        self._file.write(data)

    def _discard(self):
        self.close()
        os.unlink(self.path)
        self.path = None


def parse_disposition(value):
    """(name, filename) of a form-data Content-Disposition; filename is None when absent."""
    message = email.message.Message()
    message["content-disposition"] = value
    if message.get_content_disposition() != "form-data":
        raise MultipartError(f"part is not form-data: {value!r}")
    name = message.get_param("name", header="content-disposition")
    filename = message.get_param("filename", header="content-disposition")
    if name is None:
        raise MultipartError(f"part without a name: {value!r}")
    filename = None if filename is None else email.utils.collapse_rfc2231_value(filename)
    return email.utils.collapse_rfc2231_value(name), filename


def parse_part_headers(block):
    headers = {}
    for line in block.decode("utf-8", "replace").split("\r\n"):
        name, colon, value = line.partition(":")
        if not colon:
            raise MultipartError(f"malformed part header {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers


class MultipartParser:
    """Incremental multipart/form-data parser: feed() pieces of any size, then finish().

    `open_part(name, filename, content_type)` returns the Part that receives each part's data.
    Every delimiter is searched as CRLF "--" boundary, so CRLFs inside file data are data; the
    last len(delimiter) - 1 bytes of a piece are held back in case a delimiter straddles pieces.
    """

    def __init__(self, boundary, open_part):
        self.parts = []
        self._open_part = open_part
        self._delimiter = b"\r\n--" + boundary
        # The first delimiter may open the body with no CRLF before it: supply one.
        self._buffer = bytearray(b"\r\n")
        self._state = self._preamble
        self._finished = False

    def feed(self, data):
        self._buffer += data
        while self._state():
            pass

    def finish(self):
        """Close the open part, if any; raise if the closing delimiter never came."""
        self.close_parts()
        if not self._finished:
            raise MultipartError("body ended before the closing boundary")

    def close_parts(self):
        for part in self.parts:
            part.close()

    # Each state consumes what it can from the buffer and returns True if another state may
    # make progress with what is left, False if it needs more data.

    def _preamble(self):
        index = self._buffer.find(self._delimiter)
        if index < 0:
            del self._buffer[:-len(self._delimiter)]
            return False
        del self._buffer[:index + len(self._delimiter)]
        self._state = self._after_delimiter
        return True

    def _after_delimiter(self):
        if self._buffer.startswith(b"--"):
            self._finished = True
            self._state = self._epilogue
            return True
        end = self._buffer.find(b"\r\n")
        if end < 0:
            if len(self._buffer) > MAX_LINE:
                raise MultipartError("boundary line too long")
            return False
        if self._buffer[:end].strip(b" \t"):  # RFC 2046 allows only transport padding here
            raise MultipartError("garbage after a boundary")
        del self._buffer[:end + 2]
        self._state = self._headers
        return True

    def _headers(self):
        if self._buffer.startswith(b"\r\n"):  # a part with no header at all
            raise MultipartError("part without Content-Disposition")
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_PART_HEADERS:
                raise MultipartError("part headers too long")
            return False
        headers = parse_part_headers(bytes(self._buffer[:end]))
        del self._buffer[:end + 4]
        if "content-disposition" not in headers:
            raise MultipartError("part without Content-Disposition")
        name, filename = parse_disposition(headers["content-disposition"])
        self.parts.append(self._open_part(name, filename, headers.get("content-type")))
        self._state = self._data
        return True

    def _data(self):
        part = self.parts[-1]
        index = self._buffer.find(self._delimiter)
        if index < 0:
            keep = len(self._delimiter) - 1
            if len(self._buffer) > keep:
                part.write(bytes(self._buffer[:-keep]))
                del self._buffer[:-keep]
            return False
        part.write(bytes(self._buffer[:index]))
        part.close()
        del self._buffer[:index + len(self._delimiter)]
        self._state = self._after_delimiter
        return True

    def _epilogue(self):
        self._buffer.clear()
        return False


def receive_body(pieces, raw, parser=None):
    """Copy the body into the `raw` Part and through `parser`; return its MultipartError or None.

    A malformed body is still read to its end, so that the connection stays usable. Files are
    closed whatever happens; BodyError (the client broke the framing or left) propagates.
    """
    error = None
    try:
        for piece in pieces:
            raw.write(piece)
            if parser is not None and error is None:
                error = _feed(parser, piece)
        if parser is not None and error is None:
            error = _feed(parser, None)
    finally:
        raw.close()
        if parser is not None:
            parser.close_parts()
    return error


def _feed(parser, piece):
    """Feed a piece (None: the end of the body); return the MultipartError raised, if any."""
    try:
        if piece is None:
            parser.finish()
        else:
            parser.feed(piece)
    except MultipartError as error:
        return error
    return None
