"""Catalogues: what one peer holds, as served at GET /v1/catalog.

    {"peer": "3f2a...", "version": "9b1c...", "items": [
        {"id": "<64 hex>", "name": "cat.png", "kind": "file", "size": 123, "chunks": 2,
         "have": null}, ...]}

`have` is null for a complete content, or the base64 of a bitmap (bit i of byte i//8, most
significant bit first) of the chunks a peer holds while it is still downloading. The version is
derived from the items, so it changes exactly when what the peer holds changes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType

from swarmshare.core.manifest import parse_json, validate_name
from swarmshare.errors import RemoteProtocolError
from swarmshare.limits import (
    MAX_CATALOG_BYTES,
    MAX_CATALOG_ITEMS,
    MAX_CHUNKS_PER_CONTENT,
    MAX_CONTENT_BYTES,
)

_HEX64 = re.compile(r"[0-9a-f]{64}")
_PEER_ID = re.compile(r"[0-9a-f]{16}")


class CatalogError(RemoteProtocolError):
    """Bytes that are not a valid catalogue."""


@dataclass(frozen=True, slots=True)
class CatalogItem:
    """One content a peer holds, completely (have is None) or in part."""

    id: str
    name: str
    kind: str
    size: int
    chunks: int
    have: bytes | None = None

    @property
    def complete(self) -> bool:
        """Whether the peer holds every chunk."""
        return self.have is None

    def holds(self, index: int) -> bool:
        """Whether the peer holds chunk `index`."""
        return self.have is None or bitmap_get(self.have, index)

    def held_count(self) -> int:
        """How many chunks the peer holds."""
        return self.chunks if self.have is None else bitmap_count(self.have)


@dataclass(frozen=True)
class Catalog:
    """Everything one peer holds, with its version.

    A catalogue is immutable, so its encoding, version and index are each computed once, on
    first use: a peer hears the same catalogue's version in every announcement.
    """

    peer_id: str
    items: tuple[CatalogItem, ...]

    @cached_property
    def version(self) -> str:
        """A short hash of the items: changes whenever what the peer holds changes."""
        return hashlib.sha256(self._items_json).hexdigest()[:16]

    def encode(self) -> bytes:
        """The JSON bytes served at /v1/catalog."""
        return self._encoded

    def by_id(self) -> Mapping[str, CatalogItem]:
        """The items keyed by content ID (read-only, built once)."""
        return self._by_id

    @cached_property
    def _items_json(self) -> bytes:
        return _encode_items(self.items)

    @cached_property
    def _encoded(self) -> bytes:
        body = self._items_json.decode()
        return f'{{"items":{body},"peer":"{self.peer_id}","version":"{self.version}"}}'.encode()

    @cached_property
    def _by_id(self) -> Mapping[str, CatalogItem]:
        return MappingProxyType({item.id: item for item in self.items})


def make_catalog(peer_id: str, items: Iterable[CatalogItem]) -> Catalog:
    """A catalogue with its items in canonical (ID) order."""
    return Catalog(peer_id, tuple(sorted(items, key=lambda i: i.id)))


def decode_catalog(data: bytes) -> Catalog:
    """Parse an untrusted catalogue; CatalogError on anything invalid."""
    if len(data) > MAX_CATALOG_BYTES:
        raise CatalogError("catalogue over the size limit")
    obj = parse_json(data, CatalogError)
    if not isinstance(obj, dict) or not isinstance(obj.get("items"), list):
        raise CatalogError("catalogue must be an object with a list of items")
    peer_id = obj.get("peer")
    if not isinstance(peer_id, str) or not _PEER_ID.fullmatch(peer_id):
        raise CatalogError("bad peer id")
    raw_items = obj["items"]
    if len(raw_items) > MAX_CATALOG_ITEMS:
        raise CatalogError("too many catalogue items")
    items = [_decode_item(raw) for raw in raw_items]
    if len({i.id for i in items}) != len(items):
        raise CatalogError("duplicate content in catalogue")
    return make_catalog(peer_id, items)


def bitmap_new(count: int) -> bytearray:
    """An all-clear bitmap for `count` chunks."""
    return bytearray((count + 7) // 8)


def bitmap_set(bitmap: bytearray, index: int) -> None:
    """Mark chunk `index` held."""
    bitmap[index // 8] |= 0x80 >> (index % 8)


def bitmap_get(bitmap: bytes | bytearray, index: int) -> bool:
    """Whether chunk `index` is marked held."""
    return bool(bitmap[index // 8] & (0x80 >> (index % 8)))


def bitmap_count(bitmap: bytes | bytearray) -> int:
    """How many chunks are marked held."""
    return sum(bin(b).count("1") for b in bitmap)


def bitmap_indices(bitmap: bytes | bytearray, count: int) -> Sequence[int]:
    """The held chunk indices, in order."""
    return [i for i in range(count) if bitmap_get(bitmap, i)]


def _encode_items(items: Sequence[CatalogItem]) -> bytes:
    return json.dumps(
        [
            {
                "id": i.id,
                "name": i.name,
                "kind": i.kind,
                "size": i.size,
                "chunks": i.chunks,
                "have": None if i.have is None else base64.b64encode(i.have).decode(),
            }
            for i in items
        ],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


def _decode_item(raw: object) -> CatalogItem:
    if not isinstance(raw, dict):
        raise CatalogError("catalogue item must be an object")
    cid, name, kind = raw.get("id"), raw.get("name"), raw.get("kind")
    size, chunks, have = raw.get("size"), raw.get("chunks"), raw.get("have")
    if not isinstance(cid, str) or not _HEX64.fullmatch(cid):
        raise CatalogError("bad content id")
    if not isinstance(name, str) or validate_name(name) is not None:
        raise CatalogError("bad content name")
    if kind not in ("file", "dir"):
        raise CatalogError("bad kind")
    if type(size) is not int or not 0 <= size <= MAX_CONTENT_BYTES:
        raise CatalogError("bad size")
    if type(chunks) is not int:
        raise CatalogError("bad chunk count")
    if not 0 <= chunks <= MAX_CHUNKS_PER_CONTENT:
        raise CatalogError("bad chunk count")
    bitmap: bytes | None = None
    if have is not None:
        if not isinstance(have, str):
            raise CatalogError("bad bitmap")
        try:
            bitmap = base64.b64decode(have, validate=True)
        except (binascii.Error, ValueError):
            raise CatalogError("bad bitmap encoding") from None
        if len(bitmap) != (chunks + 7) // 8:
            raise CatalogError("bitmap length does not match the chunk count")
    return CatalogItem(cid, name, str(kind), size, chunks, bitmap)
