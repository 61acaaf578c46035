"""Human-readable summary of a prepared data directory."""

from __future__ import annotations

from cp_dist.data.meta import SPLITS, DatasetMeta


def format_stats(meta: DatasetMeta) -> str:
    lines = [
        f"data set      {meta.dataset}   ({meta.created_by})",
        f"label rule    {meta.label_rule}",
        f"split         {meta.split['method']} {'/'.join(f'{r:g}' for r in meta.split['ratios'])}"
        + (f", seed {meta.split['seed']}" if meta.split["method"] == "random" else "")
        + (", valid and test sizes rounded up" if meta.split.get("held_out_rounding") == "up" else ""),
        "",
        f"{'split':<8}{'rows':>12}{'positives':>12}{'pos. rate':>11}",
    ]
    for name in SPLITS:
        s = meta.splits[name]
        lines.append(f"{name:<8}{s['rows']:>12,}{s['positives']:>12,}{s['positive_rate']:>11.4f}")
    total = sum(meta.splits[n]["rows"] for n in SPLITS)
    lines += ["", "counts        " + ", ".join(f"{k}={v:,}" for k, v in meta.counts.items())]
    lines.append(f"interactions  {total:,} kept")
    lines += ["", f"{'field':<22}{'text name':<26}{'side':<6}{'vocab (incl. OOV)':>18}"]
    for f in meta.fields:
        lines.append(f"{f.name:<22}{f.title:<26}{f.side:<6}{f.vocab_size:>18,}")
    lines.append(f"{'all fields':<54}{meta.num_features:>18,}")
    for m in meta.malformed:
        first = ", ".join(str(x["line"]) for x in m["first_lines"])
        lines.append(f"malformed     {m['file']}: {m['count']:,} lines skipped (first: {first})")
    return "\n".join(lines)
