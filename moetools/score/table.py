"""``moe-score --format table``: the top experts per domain as a human table (rich)."""

from __future__ import annotations


def top_rows(records: list[dict], domain: str, by: str, top: int) -> list[dict]:
    rows = [r for r in records if r.get("domains", {}).get(domain, {}).get(by) is not None]
    rows.sort(key=lambda r: -r["domains"][domain][by])
    return rows[:top]


def render_table(records: list[dict], domains: list[str], *, by: str, top: int, file) -> None:
    """Print, per domain, the ``top`` (layer, expert) pairs by metric ``by`` with AF, DAS and skew."""
    from rich.table import Table

    from ..progress import table_console

    console = table_console(file=file, width=120)
    columns = list(dict.fromkeys([by, "af", "das", "prob"]))
    for domain in domains:
        table = Table(title=f"{domain}: top {top} experts by {by}")
        for name in ("layer", "expert", *columns, "skew", "p", "q"):
            table.add_column(name, justify="right")
        for record in top_rows(records, domain, by, top):
            values = record["domains"][domain]
            skew = record.get("skew") or {}
            cells = [str(record["layer"]), str(record["expert"])]
            cells += ["" if values.get(name) is None else f"{values[name]:.4g}" for name in columns]
            ratio = skew.get("ratio")
            cells.append("" if skew.get("domain") != domain else ("inf" if ratio is None else f"{ratio:.2f}x"))
            cells.append("" if skew.get("p") is None else f"{skew['p']:.3g}")
            cells.append("" if skew.get("q") is None else f"{skew['q']:.3g}")
            table.add_row(*cells)
        console.print(table)


__all__ = ["render_table", "top_rows"]
