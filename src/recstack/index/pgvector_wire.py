"""The binary wire formats the pgvector backend speaks, built and parsed with numpy (no per-row Python).

* ``COPY ... FROM STDIN (FORMAT BINARY)`` tuples ``(id bigint, embedding vector(d))``:
  :func:`copy_records` and the :data:`COPY_HEADER` / :data:`COPY_TRAILER` framing;
* binary one-dimensional arrays (``int8[]``, ``int4[]``, ``float8[]``, ``vector[]``) as
  statement parameters (the wrappers :class:`IdArray`, :class:`Int4Array`,
  :class:`Float8Array`, :class:`VectorArray`) and as results (numpy loaders);
  :func:`register_types` installs both on a psycopg connection.

Layouts (big-endian, PostgreSQL's ``send``/``recv`` functions): a pgvector value is
int16 dim, int16 unused, dim x float4; an array is int32 ndim, int32 has_null,
int32 element oid, then per dimension int32 length and int32 lower bound, then
per element int32 byte length and the element.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from ..core.errors import ConfigError, DataError

_INT8_ARRAY_OID, _FLOAT8_ARRAY_OID, _INT4_ARRAY_OID = 1016, 1022, 1007
_INT8_OID, _FLOAT8_OID, _INT4_OID = 20, 701, 23


def require_psycopg() -> Any:
    """The psycopg 3 module, or an ImportError naming the extra that brings it."""
    try:
        import psycopg
    except ImportError:
        raise ImportError("The pgvector index needs psycopg 3: pip install 'recstack[pgvector]' "
                          "(or pip install 'psycopg[binary]').") from None
    return psycopg


def _vector_record(d: int) -> np.dtype:
    """One length-prefixed pgvector value: int32 length, uint16 dim, uint16 unused, d x float4 (big-endian)."""
    return np.dtype([("len", ">i4"), ("dim", ">u2"), ("unused", ">u2"), ("v", ">f4", (d,))])


def _copy_record(d: int) -> np.dtype:
    """One binary COPY tuple (id bigint, embedding vector(d))."""
    return np.dtype([("nfields", ">i2"), ("id_len", ">i4"), ("id", ">i8"), ("v_len", ">i4"),
                     ("dim", ">u2"), ("unused", ">u2"), ("v", ">f4", (d,))])


COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)


def copy_records(ids: np.ndarray, x: np.ndarray) -> bytes:
    """ids [n] int64, x [n, d] float32 -> the tuples of a binary COPY (no header/trailer)."""
    d = x.shape[1]
    rec = np.empty(x.shape[0], dtype=_copy_record(d))
    rec["nfields"], rec["id_len"], rec["id"] = 2, 8, ids
    rec["v_len"], rec["dim"], rec["unused"], rec["v"] = 4 + 4 * d, d, 0, x
    return rec.tobytes()


def _array_header(n: int, elem_oid: int) -> bytes:
    if n == 0:
        return struct.pack(">iii", 0, 0, elem_oid)
    return struct.pack(">iiiii", 1, 0, elem_oid, n, 1)


def _dump_array(values: np.ndarray, elem: str, elem_oid: int) -> bytes:
    """1-D fixed-width array (int8/int4/float8) in PostgreSQL's binary array format."""
    rec = np.empty(values.shape[0], dtype=[("len", ">i4"), ("v", elem)])
    rec["len"], rec["v"] = np.dtype(elem).itemsize, values
    return _array_header(values.shape[0], elem_oid) + rec.tobytes()


def _dump_vectors(x: np.ndarray, elem_oid: int) -> bytes:
    """[n, d] float32 -> binary vector[]."""
    rec = np.empty(x.shape[0], dtype=_vector_record(x.shape[1]))
    rec["len"], rec["dim"], rec["unused"], rec["v"] = 4 + 4 * x.shape[1], x.shape[1], 0, x
    return _array_header(x.shape[0], elem_oid) + rec.tobytes()


def _array_body(data: Any) -> tuple[int, memoryview]:
    """(number of elements, element bytes) of a binary 1-D array without NULLs."""
    buf = memoryview(data)
    ndim, has_null = struct.unpack_from(">ii", buf, 0)
    if ndim == 0:
        return 0, buf[12:12]
    if ndim != 1 or has_null:
        raise DataError("unexpected array from PostgreSQL (multi-dimensional or with NULLs).")
    (n,) = struct.unpack_from(">i", buf, 12)
    return n, buf[20:]


def _load_array(data: Any, elem: str) -> np.ndarray:
    n, body = _array_body(data)
    rec = np.frombuffer(body, dtype=[("len", ">i4"), ("v", elem)], count=n)
    return rec["v"].astype(np.dtype(elem).newbyteorder("="))


def _load_vectors(data: Any) -> np.ndarray:
    n, body = _array_body(data)
    if n == 0:
        return np.empty((0, 0), np.float32)
    (d,) = struct.unpack_from(">H", body, 4)
    return np.frombuffer(body, dtype=_vector_record(d), count=n)["v"].astype(np.float32)


class IdArray:
    """Parameter wrapper: int64 [n] -> binary int8[]."""

    def __init__(self, ids: np.ndarray):
        self.ids = np.asarray(ids, dtype=np.int64).reshape(-1)


class Int4Array:
    """Parameter wrapper: [n] -> binary int4[]."""

    def __init__(self, values: np.ndarray):
        self.values = np.asarray(values, dtype=np.int32).reshape(-1)


class Float8Array:
    """Parameter wrapper: [n] -> binary float8[]."""

    def __init__(self, values: np.ndarray):
        self.values = np.asarray(values, dtype=np.float64).reshape(-1)


class VectorArray:
    """Parameter wrapper: [n, d] float32 -> binary vector[]."""

    def __init__(self, x: np.ndarray):
        self.x = np.ascontiguousarray(x, dtype=np.float32)


def register_types(conn: Any) -> None:
    """Binary dumpers for the wrappers and numpy loaders for int8[]/float8[]/int4[]/vector[]."""
    psycopg = require_psycopg()
    from psycopg.adapt import Dumper, Loader
    from psycopg.pq import Format

    info = psycopg.types.TypeInfo.fetch(conn, "vector")
    if info is None:
        raise ConfigError("the 'vector' type is missing in this database; run CREATE EXTENSION vector.")
    vec_oid, vec_array_oid = info.oid, info.array_oid

    def dumper(cls: type, oid: int, fn: Any) -> None:
        conn.adapters.register_dumper(cls, type(f"{cls.__name__}Dumper", (Dumper,), {
            "format": Format.BINARY, "oid": oid, "dump": lambda self, obj: fn(obj)}))

    dumper(IdArray, _INT8_ARRAY_OID, lambda o: _dump_array(o.ids, ">i8", _INT8_OID))
    dumper(Int4Array, _INT4_ARRAY_OID, lambda o: _dump_array(o.values, ">i4", _INT4_OID))
    dumper(Float8Array, _FLOAT8_ARRAY_OID, lambda o: _dump_array(o.values, ">f8", _FLOAT8_OID))
    dumper(VectorArray, vec_array_oid, lambda o: _dump_vectors(o.x, vec_oid))

    def loader(oid: int, fn: Any) -> None:
        conn.adapters.register_loader(oid, type(f"Loader{oid}", (Loader,), {
            "format": Format.BINARY, "load": lambda self, data: fn(data)}))

    loader(_INT8_ARRAY_OID, lambda b: _load_array(b, ">i8"))
    loader(_FLOAT8_ARRAY_OID, lambda b: _load_array(b, ">f8"))
    loader(_INT4_ARRAY_OID, lambda b: _load_array(b, ">i4"))
    loader(vec_array_oid, _load_vectors)


__all__ = ["COPY_HEADER", "COPY_TRAILER", "Float8Array", "IdArray", "Int4Array", "VectorArray", "copy_records",
           "register_types", "require_psycopg"]
