"""How each document gets its domain name: ``<field>/<column value|constant|cluster name>``.

One place for the naming rule, so the registration of clusters, the assignment of documents and
the manifest's provenance can never disagree about a domain's name.
"""

from __future__ import annotations

from mixagent.data.build.inputs import ResolvedInput
from mixagent.data.build.readers import Batch
from mixagent.data.clustering import TextClusterer
from mixagent.errors import DataError


def register_domain(domains: set[str], name: str, limit: int, inp: ResolvedInput) -> None:
    """Add a new domain, refusing more than ``max_domains`` (a high-cardinality column)."""
    if len(domains) >= limit:
        col = inp.config.domain.column
        hint = f" (column {col!r} has too many distinct values; cluster instead?)" if col else ""
        raise DataError(
            f"{inp.label}: more than max_domains={limit} domains{hint}; raise 'max_domains' "
            "or assign fewer domains"
        )
    domains.add(name)


def cluster_domain(inp: ResolvedInput, cluster: int) -> str:
    """The domain name of cluster ``cluster`` of a clustered input (its given name or number)."""
    assert inp.config.domain.cluster is not None
    return f"{inp.field}/{inp.config.domain.cluster.domain_suffix(cluster)}"


def domain_names(inp: ResolvedInput, batch: Batch, clusterer: TextClusterer | None) -> list[str]:
    """The domain of every document of ``batch``; a missing or non-plain column value is an error."""
    dom = inp.config.domain
    if clusterer is not None:
        return [cluster_domain(inp, int(c)) for c in clusterer.predict(batch.texts)]
    if dom.constant is not None:
        return [f"{inp.field}/{dom.constant}"] * len(batch.texts)
    assert batch.values is not None
    names = []
    for value, text in zip(batch.values, batch.texts, strict=True):
        if value is None or (isinstance(value, str) and not value.strip()):
            if dom.default is None:
                raise DataError(
                    f"{inp.label}.domain.column: a document in {batch.source} has no value in "
                    f"column {dom.column!r} (text starts {text[:40]!r}); fill the column or set "
                    "'domain.default'"
                )
            value = dom.default
        if not isinstance(value, str | int | float | bool):
            raise DataError(
                f"{inp.label}.domain.column: column {dom.column!r} of {batch.source} must hold "
                f"plain values (text or numbers), not {type(value).__name__}"
            )
        names.append(f"{inp.field}/{str(value).strip()}")
    return names


def describe_domain(inp: ResolvedInput, name: str) -> str:
    """The manifest description of a column or constant domain (clusters describe themselves)."""
    dom = inp.config.domain
    if dom.constant is not None:
        return dom.description
    if dom.column is not None:
        return f"documents whose {dom.column!r} is {name.split('/', 1)[1]!r}"
    return ""  # clusters were described when registered
