"""``Exclusions``: the candidate ids to exclude for each integer query key (e.g. the items each
user rated in training), as :class:`~recstack.core.id_lists.IdLists`.

The per-key lists are looked up per batch with ``exclusions.take(query_keys)`` (or
``pairs(query_keys)``), without Python loops. The name is kept because it says what
the lists are for where they are passed (``FactorizedTopK(exclude=...)``, ``search(exclude=...)``).
"""

from .id_lists import IdLists

Exclusions = IdLists

__all__ = ["Exclusions"]
