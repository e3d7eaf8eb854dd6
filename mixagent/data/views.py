"""Domain-space views: the same data directory presented with coarser or finer domains.

A mixing policy is meant to transfer across *domain spaces* — the same text cut into fewer,
broader domains or into more, narrower ones. Rebuilding a data directory for every cut would
re-tokenize the corpus and change its content hash (and with it every cached base), so a domain
space is a read-only :class:`DomainView` over an existing :class:`~mixagent.data.manifest.DataDir`
that presents *virtual* domains:

* **groups** — ``{new_name: [member, ...]}``: a group is the union of its members. Its token
  stream is the members' streams concatenated in the listed order, so a sampler that draws
  chunks uniformly from the group draws each member in proportion to its tokens (exactly, over
  an epoch of the group). Its eval stream is the concatenation of the members' eval shards, so
  evenly spaced held-out sequences cover the members in proportion to their held-out tokens.
  Members must exist, be used once, and lie in one field (a group's role is its field's).
  Domains named by no group stay as they are. *Memory:* the concatenation is built once per
  view and split, on first use, and held in RAM (2 bytes per token for uint16 shards): about
  0.3 MB per domain of the built-in ``small`` corpus, but GBs for a production corpus. (An
  index map without the copy would need the sampler to gather across several arrays per domain;
  not worth it at proxy scale.)
* **split** — ``N``: every domain (after grouping) becomes ``N`` contiguous parts of its token
  stream, ``name#1`` .. ``name#N``. Cuts fall on document boundaries (just after the first EOS at
  or after ``i/N`` of the stream, when one is within reach), so a document belongs to exactly one
  part and the parts tile the stream exactly. Parts are memmap slices: no copy. The eval shard is
  cut the same way into the same number of parts; documents keep their order in both splits, so
  eval part ``i`` holds the held-out documents of about the same stretch of the corpus as train
  part ``i``. Parts are as different as the corpus order makes them: what a part *is* depends on
  how the data directory was written (the built-in corpus writes a domain's source files in a
  seeded shuffle, a file's documents together, so a part is a random half of its files).

The view is a :class:`DataDir` (same lookups, same tokenizer and task sets) whose manifest lists
the virtual domains; its ``content_hash`` is the underlying directory's (the tokens are the same)
and ``provenance["domain_space"]`` records the cut. Code that pre-trains a base must use the
underlying directory (:attr:`DomainView.source`), so a base never depends on the domain space.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mixagent.data.manifest import DataDir, DomainInfo, Split
from mixagent.errors import DataError

PART_SEP = "#"
_EOS_WINDOW = 1 << 16  # tokens searched for a document boundary after a proportional cut


class DomainSpaceError(DataError):
    """A domain-space definition that does not fit the data; ``key`` is the offending key."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def part_bounds(tokens: np.ndarray, parts: int, eos: int | None) -> list[int]:
    """``parts + 1`` increasing cut points tiling ``tokens`` (cuts just after an EOS when near)."""
    n = int(tokens.shape[0])
    cuts = [0]
    for i in range(1, parts):
        at = max(i * n // parts, cuts[-1])
        if eos is not None and n:
            window = np.asarray(tokens[at : min(n, at + _EOS_WINDOW)])
            hits = np.flatnonzero(window == eos)
            if hits.size:
                at = at + int(hits[0]) + 1
        cuts.append(min(at, n))
    cuts.append(n)
    return cuts


class DomainView(DataDir):
    """A :class:`DataDir` whose domains are groups and/or parts of another's (see module doc).

    Args:
        data: the underlying data directory.
        groups: ``{new_name: [member domain, ...]}``; members' union, in the listed order.
        split: cut every (grouped) domain into this many contiguous parts (1 = no split).

    Raises :class:`DomainSpaceError` (a :class:`DataError`) with the offending key:
    ``groups.<name>``, ``groups.<name>[i]`` or ``split``.
    """

    def __init__(self, data: DataDir, groups: Mapping[str, Sequence[str]] | None = None,
                 split: int = 1):
        # Deliberately no DataDir.__init__: nothing on disk is read again; the shards were
        # checked when `data` was opened.
        self.source = data
        self.path = data.path
        self.groups = {str(k): [str(m) for m in v] for k, v in (groups or {}).items()}
        self.split = int(split)
        if self.split < 1:
            raise DomainSpaceError("split", f"must be at least 1, got {split}")
        grouped = self._check_groups(data)
        self._members: dict[str, list[str]] = {}  # virtual grouped domain -> underlying domains
        self._parts: dict[str, tuple[str, int]] = {}  # part name -> (grouped domain, part index)
        self._bounds: dict[tuple[str, Split], list[int]] = {}
        self._concat: dict[tuple[str, Split], np.ndarray] = {}
        infos = []
        for name, field, members in grouped:
            self._members[name] = members
            infos.extend(self._infos(name, field, members))
        provenance = dict(data.manifest.provenance)
        provenance["domain_space"] = {"groups": self.groups, "split": self.split,
                                      "underlying_domains": data.domain_names}
        self.manifest = data.manifest.model_copy(update={"domains": infos, "provenance": provenance})
        self._maps: dict[tuple[str, str], np.ndarray] = {}

    # -- construction ----------------------------------------------------------------------------
    def _check_groups(self, data: DataDir) -> list[tuple[str, str, list[str]]]:
        """The grouped domains in manifest order (a group where its first member was)."""
        known = set(data.domain_names)
        owner: dict[str, str] = {}
        for gname, members in self.groups.items():
            key = f"groups.{gname}"
            if not gname or PART_SEP in gname:
                raise DomainSpaceError(key, f"a group name must be non-empty and may not contain "
                                            f"{PART_SEP!r} (reserved for split parts)")
            if gname in known and gname not in members:
                raise DomainSpaceError(key, f"{gname!r} is already a domain of the data directory; "
                                            "choose another group name")
            if not members:
                raise DomainSpaceError(key, "a group needs at least one member domain")
            for i, m in enumerate(members):
                if m not in known:
                    raise DomainSpaceError(f"{key}[{i}]", f"{m!r} is not a domain of the data "
                                           f"directory; known: {', '.join(data.domain_names)}")
                if m in owner:
                    where = "twice in this group" if owner[m] == gname else \
                        f"already in group {owner[m]!r}"
                    raise DomainSpaceError(f"{key}[{i}]", f"{m!r} is listed {where}; a domain "
                                                          "belongs to at most one group")
                owner[m] = gname
            fields = {data.domain(m).field for m in members}
            if len(fields) > 1:
                by = ", ".join(f"{m} ({data.domain(m).field})" for m in members)
                raise DomainSpaceError(key, f"members come from fields {sorted(fields)}: {by}; a "
                                            "group must lie in one field")
        out: list[tuple[str, str, list[str]]] = []
        placed: set[str] = set()
        for d in data.domains:
            if d.name not in owner:
                out.append((d.name, d.field, [d.name]))
            elif owner[d.name] not in placed:
                placed.add(owner[d.name])
                out.append((owner[d.name], d.field, self.groups[owner[d.name]]))
        return out

    def _infos(self, name: str, field: str, members: list[str]) -> list[DomainInfo]:
        src = self.source
        infos = [src.domain(m) for m in members]
        role = infos[0].role
        if len(members) == 1 and members[0] == name:
            whole = infos[0]
        else:
            whole = DomainInfo(
                name=name, field=field, role=role,
                train_file="view:" + "+".join(i.train_file for i in infos),
                eval_file="view:" + "+".join(i.eval_file for i in infos),
                train_tokens=sum(i.train_tokens for i in infos),
                eval_tokens=sum(i.eval_tokens for i in infos),
                train_documents=sum(i.train_documents for i in infos),
                eval_documents=sum(i.eval_documents for i in infos),
                description=f"group of {', '.join(members)}",
            )
        if self.split == 1:
            return [whole]
        out = []
        for split in ("train", "eval"):
            self._bounds[(name, split)] = part_bounds(self._whole(name, split), self.split,
                                                      src.manifest.tokenizer.eos_token_id)
        for p in range(self.split):
            pname = f"{name}{PART_SEP}{p + 1}"
            self._parts[pname] = (name, p)
            tb, eb = self._bounds[(name, "train")], self._bounds[(name, "eval")]
            nt, ne = tb[p + 1] - tb[p], eb[p + 1] - eb[p]
            out.append(DomainInfo(
                name=pname, field=field, role=role,
                train_file=f"view:{whole.train_file.removeprefix('view:')}[{tb[p]}:{tb[p + 1]}]",
                eval_file=f"view:{whole.eval_file.removeprefix('view:')}[{eb[p]}:{eb[p + 1]}]",
                train_tokens=nt, eval_tokens=ne,
                # estimated: documents are not indexed, and counting EOS would read every token
                train_documents=round(whole.train_documents * nt / max(1, whole.train_tokens)),
                eval_documents=round(whole.eval_documents * ne / max(1, whole.eval_tokens)),
                description=f"part {p + 1} of {self.split} of {name} (contiguous)",
            ))
        return out

    # -- tokens ----------------------------------------------------------------------------------
    def _whole(self, name: str, split: Split) -> np.ndarray:
        """A grouped domain's full stream: the underlying memmap, or the members' concatenation."""
        members = self._members[name]
        if len(members) == 1:
            return self.source.tokens(members[0], split)
        key = (name, split)
        if key not in self._concat:
            arr = np.concatenate([np.asarray(self.source.tokens(m, split)) for m in members])
            arr.flags.writeable = False
            self._concat[key] = arr
        return self._concat[key]

    def tokens(self, domain: str, split: Split = "train") -> np.ndarray:
        """The virtual domain's token ids for a split (read-only; a slice or a concatenation)."""
        if domain in self._parts:
            name, p = self._parts[domain]
            b = self._bounds[(name, split)]
            return self._whole(name, split)[b[p] : b[p + 1]]
        if domain in self._members:
            if self.split > 1:
                self.domain(domain)  # raises: the whole is not a domain of a split view
            return self._whole(domain, split)
        self.domain(domain)  # raises the usual unknown-domain error
        raise AssertionError("unreachable")

    def members(self, domain: str) -> list[str]:
        """The underlying domains a virtual domain draws from (one for a part of an ungrouped one)."""
        self.domain(domain)
        name = self._parts[domain][0] if domain in self._parts else domain
        return list(self._members[name])

    def describe(self) -> dict[str, Any]:
        """The cut, as recorded in ``manifest.provenance["domain_space"]``."""
        return dict(self.manifest.provenance["domain_space"])

    def __repr__(self) -> str:
        return (f"DomainView({str(self.path)!r}, domains={len(self.domains)}, "
                f"groups={len(self.groups)}, split={self.split})")
