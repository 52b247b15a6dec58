"""The checkpoint file format: a JSON header, raw array buffers and a checksum, never pickle.

Pickle is not an option for checkpoints: the checkpoint folder lives on a share that users
can write, and unpickling a file runs whatever code the file names. Here the only things
parsed are JSON and numpy dtype strings, and array bytes go straight into ``np.empty``
buffers, so a planted file can at worst fail to load.

Layout (integers little-endian)::

    offset 0    8 bytes   magic b"\\x89HOCKPT\\n"
    offset 8    8 bytes   header length H (uint64)
    offset 16   H bytes   header: UTF-8 JSON with the format version, the checkpoint's job id,
                          name, description and time, the buffer table and the encoded state
                padding   zero bytes up to a multiple of 64; the data area starts there
    data area             one raw buffer per array, each at a multiple of 64 from the start
                          of the data area; the table gives dtype.str, shape, order ("C"/"F"),
                          offset and nbytes
    last 32 bytes         sha256 of every byte before them

The trailing digest makes a file verifiable on its own (``metadata.json`` can be rebuilt
from the files); ``metadata.json`` records the sha256 of the whole file, as ``sha256sum``
prints it. Both digests come from one pass: the stream is hashed on a helper thread while
the main thread writes or reads it (hashlib releases the GIL on big buffers), which keeps
the cost of the checksum off the critical path of a save.

State encoding inside the header: JSON values stand for themselves; everything else is an
object tagged with ``"$type"``: ``ndarray`` and ``scalar`` (numpy, pointing at a buffer),
``tuple``, ``dict`` (a user dict that itself has a ``"$type"`` key), and ``dataframe`` /
``series`` (see :mod:`.checkpoint_pandas`).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import queue
import stat
import threading
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal, NamedTuple

import numpy as np

from . import checkpoint_pandas
from .errors import CheckpointLoadError, CheckpointSaveError

#: First bytes of every checkpoint file; the high byte catches text-mode transfers.
MAGIC = b"\x89HOCKPT\n"
#: Version written into the header; readers refuse versions they do not know.
FORMAT_VERSION = 1
#: Alignment of the data area and of each buffer (cache line; lets readers map buffers).
ALIGNMENT = 64
#: Length of the trailing sha256 digest.
TRAILER_BYTES = 32
#: The tag key that marks an encoded non-JSON value.
TAG = "$type"
#: Array kinds stored raw: bool, ints, floats, complex, datetime/timedelta, bytes, str.
ARRAY_KINDS = frozenset("biufcmMSU")
#: Streams at least this big are hashed on a helper thread.
THREADED_HASH_MIN_BYTES = 1 << 22
#: Size of one read while loading; small enough to overlap reading and hashing.
READ_CHUNK_BYTES = 1 << 22

_PRELUDE_BYTES = len(MAGIC) + 8
_JSON_SCALARS = (str, int, float, bool, type(None))


def _align(offset: int) -> int:
    return -(-offset // ALIGNMENT) * ALIGNMENT


class _StateEncoder:
    """Turns a state dict into JSON plus a list of array buffers to write after it."""

    def __init__(self) -> None:
        self.arrays: list[np.ndarray] = []
        self.table: list[dict[str, Any]] = []
        self._end = 0

    def add_array(self, array: np.ndarray, path: str) -> int:
        """Register an array as a buffer and return its index in the buffer table."""
        if array.dtype.kind not in ARRAY_KINDS:
            raise CheckpointSaveError(
                f"{path}: arrays of dtype {array.dtype} cannot be stored without pickle; "
                "convert them to numeric, bool or string arrays",
                context={"key": path, "dtype": str(array.dtype)},
            )
        if array.flags.c_contiguous:
            order = "C"
        elif array.flags.f_contiguous:
            order = "F"
        else:
            array, order = np.ascontiguousarray(array), "C"
        offset = _align(self._end)
        self._end = offset + array.nbytes
        self.arrays.append(array)
        self.table.append(
            {
                "dtype": array.dtype.str,
                "shape": list(array.shape),
                "order": order,
                "offset": offset,
                "nbytes": array.nbytes,
            }
        )
        return len(self.arrays) - 1

    def encode(self, value: Any, path: str) -> Any:
        """Return the JSON form of ``value``; ``path`` names it in error messages."""
        if isinstance(value, np.generic):
            return {TAG: "scalar", "buffer": self.add_array(np.asarray(value), path)}
        if isinstance(value, _JSON_SCALARS):
            return value
        if isinstance(value, dict):
            items = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise CheckpointSaveError(
                        f"{path}: dict keys must be strings, got {key!r}", context={"key": path}
                    )
                items[key] = self.encode(item, f"{path}[{key!r}]")
            return {TAG: "dict", "items": items} if TAG in items else items
        if isinstance(value, list):
            return [self.encode(item, f"{path}[{i}]") for i, item in enumerate(value)]
        if isinstance(value, tuple):
            return {TAG: "tuple", "items": self.encode(list(value), path)}
        if type(value) is np.ndarray:
            return {TAG: "ndarray", "buffer": self.add_array(value, path)}
        pandas_node = checkpoint_pandas.encode(value, path, self.add_array)
        if pandas_node is not None:
            return pandas_node
        raise CheckpointSaveError(
            f"{path}: values of type {type(value).__qualname__} cannot be checkpointed; "
            "use JSON values, numpy arrays or pandas frames",
            context={"key": path, "type": type(value).__qualname__},
        )


@dataclass(frozen=True)
class EncodedCheckpoint:
    """A checkpoint ready to be written: the header bytes and the buffers after them."""

    head: bytes
    arrays: list[np.ndarray]
    table: list[dict[str, Any]]
    size_bytes: int


def encode_checkpoint(state: dict[str, Any], meta: dict[str, Any]) -> EncodedCheckpoint:
    """Encode ``state`` with the header fields ``meta`` (job id, name, time, description).

    Raises:
        CheckpointSaveError: A value cannot be stored; the message names its key.
    """
    encoder = _StateEncoder()
    encoded_state = encoder.encode(state, "state")
    header = {"format": FORMAT_VERSION, **meta, "buffers": encoder.table, "state": encoded_state}
    header_bytes = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    prelude = MAGIC + len(header_bytes).to_bytes(8, "little")
    head = prelude + header_bytes
    head += bytes(_align(len(head)) - len(head))
    data_bytes = encoder.table[-1]["offset"] + encoder.table[-1]["nbytes"] if encoder.table else 0
    size_bytes = len(head) + data_bytes + TRAILER_BYTES
    return EncodedCheckpoint(head, encoder.arrays, encoder.table, size_bytes)


def _byte_view(array: np.ndarray) -> memoryview:
    """The array's memory as bytes, in its storage order, without copying."""
    return array.ravel(order="K").view(np.uint8).data


class _StreamHasher:
    """sha256 over a stream of buffers, on a helper thread when the stream is big.

    Buffers passed to :meth:`feed` must not change until :meth:`finish` returns.
    """

    def __init__(self, *, threaded: bool) -> None:
        self.hash = hashlib.sha256()
        self._queue: queue.SimpleQueue[memoryview | bytes | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._run, name="checkpoint-sha256")
            self._thread.start()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            self.hash.update(data)

    def feed(self, data: memoryview | bytes) -> None:
        if self._thread is None:
            self.hash.update(data)
        else:
            self._queue.put(data)

    def finish(self) -> Any:
        """Wait for every fed buffer to be hashed and return the hash object."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        return self.hash

    def __enter__(self) -> _StreamHasher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.finish()


def write_checkpoint(file: BinaryIO, encoded: EncodedCheckpoint) -> str:
    """Write and fsync ``encoded`` from the start of an open file; return its sha256 (hex).

    The file may be an old checkpoint being reused: it is overwritten in place and cut to
    the new size. The bulk is fsynced while the hash is still being computed, then the
    digest trailer is appended and fsynced: the device flush and the hashing overlap
    instead of adding up.
    """
    with _StreamHasher(threaded=encoded.size_bytes >= THREADED_HASH_MIN_BYTES) as hasher:
        hasher.feed(encoded.head)
        file.write(encoded.head)
        position = len(encoded.head)
        for array, entry in zip(encoded.arrays, encoded.table, strict=True):
            padding = bytes(len(encoded.head) + entry["offset"] - position)
            view = _byte_view(array)
            hasher.feed(padding)
            hasher.feed(view)
            file.write(padding)
            file.write(view)
            position += len(padding) + entry["nbytes"]
        file.flush()
        os.fsync(file.fileno())
        digest = hasher.finish()
    trailer = digest.digest()
    file.write(trailer)
    file.truncate()
    file.flush()
    os.fsync(file.fileno())
    digest.update(trailer)
    return str(digest.hexdigest())


@dataclass(frozen=True)
class CheckpointFile:
    """What :func:`read_checkpoint` found: header fields, state (if decoded) and digest."""

    header: dict[str, Any]
    state: dict[str, Any] | None
    sha256: str
    size_bytes: int


def read_checkpoint(path: str | os.PathLike[str], *, decode_state: bool = True) -> CheckpointFile:
    """Read, verify and decode one checkpoint file.

    Args:
        path: The ``.ckpt`` file. Symlinks and non-regular files are refused.
        decode_state: ``False`` only verifies the file and returns its header fields,
            reading through one scratch buffer instead of allocating the arrays.

    Raises:
        CheckpointLoadError: The file is not a checkpoint, is truncated or malformed, or
            its trailing digest does not match its content.
        OSError: The file cannot be opened or read.
    """
    # O_NONBLOCK: opening a planted FIFO must not hang; it has no effect on regular files.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with open(fd, "rb", buffering=0) as file:
        try:
            return _read(file, decode_state)
        except (CheckpointLoadError, OSError):
            raise
        except Exception as exc:  # the file is untrusted: any other failure means malformed
            raise CheckpointLoadError(f"file is malformed: {exc!r}") from exc


def _read(file: io.FileIO, decode_state: bool) -> CheckpointFile:
    status = os.fstat(file.fileno())
    if not stat.S_ISREG(status.st_mode):
        raise CheckpointLoadError("not a regular file")
    head, header = _read_head(file, status.st_size)
    specs = _plan_buffers(header.get("buffers"))
    data_bytes = specs[-1].offset + specs[-1].nbytes if specs else 0
    expected = len(head) + data_bytes + TRAILER_BYTES
    if status.st_size != expected:
        raise CheckpointLoadError(f"file has {status.st_size} bytes, its header says {expected}")
    arrays = [np.empty(b.shape, b.dtype, order=b.order) for b in specs] if decode_state else []
    big = decode_state and data_bytes >= THREADED_HASH_MIN_BYTES
    with _StreamHasher(threaded=big) as hasher:
        hasher.feed(head)
        _read_data(file, specs, [_byte_view(a) for a in arrays] or None, hasher)
        digest = hasher.finish()
    trailer = _read_exact(file, TRAILER_BYTES)
    if trailer != digest.digest():
        raise CheckpointLoadError("sha256 of the content does not match the file's own digest")
    digest.update(trailer)
    state = _decode(header["state"], arrays) if decode_state else None
    if decode_state and not isinstance(state, dict):
        raise CheckpointLoadError("state is not a dict")
    fields = {k: v for k, v in header.items() if k not in ("buffers", "state")}
    return CheckpointFile(fields, state, digest.hexdigest(), status.st_size)


def _read_exact(file: io.FileIO, count: int) -> bytes:
    data = file.read(count)
    if data is None or len(data) != count:
        raise CheckpointLoadError("file ends early")
    return data


def _read_head(file: io.FileIO, size: int) -> tuple[bytes, dict[str, Any]]:
    if size < _PRELUDE_BYTES + TRAILER_BYTES:
        raise CheckpointLoadError(f"file has only {size} bytes")
    prelude = _read_exact(file, _PRELUDE_BYTES)
    if prelude[: len(MAGIC)] != MAGIC:
        raise CheckpointLoadError("not a checkpoint file (bad magic bytes)")
    header_length = int.from_bytes(prelude[len(MAGIC) :], "little")
    head_length = _align(_PRELUDE_BYTES + header_length)
    if head_length + TRAILER_BYTES > size:
        raise CheckpointLoadError("file is shorter than its header says")
    head = prelude + _read_exact(file, head_length - _PRELUDE_BYTES)
    try:
        header = json.loads(head[_PRELUDE_BYTES : _PRELUDE_BYTES + header_length])
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointLoadError(f"header is not valid JSON: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT_VERSION:
        raise CheckpointLoadError("header is not a checkpoint header of a known version")
    return head, header


class _BufferSpec(NamedTuple):
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    order: Literal["C", "F"]
    offset: int
    nbytes: int


def _plan_buffers(table: Any) -> list[_BufferSpec]:
    """Check the buffer table against the layout the writer produces."""
    if not isinstance(table, list):
        raise CheckpointLoadError("header has no buffer table")
    specs: list[_BufferSpec] = []
    end = 0
    for entry in table:
        dtype = np.dtype(str(entry["dtype"]))
        shape = tuple(int(n) for n in entry["shape"])
        spec = _BufferSpec(
            dtype, shape, entry["order"], _align(end), math.prod(shape) * dtype.itemsize
        )
        valid = (
            dtype.kind in ARRAY_KINDS
            and min(shape, default=0) >= 0
            and spec.order in ("C", "F")
            and entry["offset"] == spec.offset
            and entry["nbytes"] == spec.nbytes
        )
        if not valid:
            raise CheckpointLoadError(f"buffer table entry {len(specs)} is invalid: {entry}")
        specs.append(spec)
        end = spec.offset + spec.nbytes
    return specs


def _read_data(
    file: io.FileIO,
    specs: list[_BufferSpec],
    targets: list[memoryview] | None,
    hasher: _StreamHasher,
) -> None:
    """Read the data area into ``targets`` (or through a scratch buffer), hashing it.

    Chunked reads let the hasher thread work on one chunk while the next is read.
    """
    scratch = memoryview(bytearray(0 if targets else READ_CHUNK_BYTES))
    position = 0
    for index, spec in enumerate(specs):
        if spec.offset > position:
            hasher.feed(_read_exact(file, spec.offset - position))
        for start in range(0, spec.nbytes, READ_CHUNK_BYTES):
            step = min(READ_CHUNK_BYTES, spec.nbytes - start)
            # The scratch buffer is only used with an inline hasher, so reusing it is safe.
            chunk = targets[index][start : start + step] if targets else scratch[:step]
            if file.readinto(chunk) != step:
                raise CheckpointLoadError("file ends early")
            hasher.feed(chunk)
        position = spec.offset + spec.nbytes


def _decode(node: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(node, list):
        return [_decode(item, arrays) for item in node]
    if not isinstance(node, dict):
        return node
    tag = node.get(TAG)
    if tag is None:
        return {key: _decode(value, arrays) for key, value in node.items()}
    if tag == "ndarray":
        return arrays[node["buffer"]]
    if tag == "scalar":
        return arrays[node["buffer"]][()]
    if tag == "tuple":
        return tuple(_decode(node["items"], arrays))
    if tag == "dict":
        return {key: _decode(value, arrays) for key, value in node["items"].items()}
    if tag in checkpoint_pandas.TAGS:
        return checkpoint_pandas.decode(node, arrays.__getitem__)
    raise CheckpointLoadError(f"unknown value tag {tag!r} in the state")


__all__ = [
    "MAGIC",
    "CheckpointFile",
    "EncodedCheckpoint",
    "encode_checkpoint",
    "read_checkpoint",
    "write_checkpoint",
]
