"""Turning benchmark results into tables: plain text for the terminal, Markdown for the README."""

from __future__ import annotations


def table(rows, columns, markdown=False) -> str:
    """``rows`` (dicts) as a table of ``columns`` [(key, heading, format)]."""
    cells = [[heading for _, heading, _ in columns]]
    for row in rows:
        cells.append(
            [("" if row.get(key) is None else fmt.format(row[key])) for key, _, fmt in columns]
        )
    if markdown:
        lines = [
            "| " + " | ".join(cells[0]) + " |",
            "| " + " | ".join("---" for _ in columns) + " |",
        ]
        lines += ["| " + " | ".join(line) + " |" for line in cells[1:]]
        return "\n".join(lines)
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths)))
        for line in cells
    )


def with_ratios(rows, group_keys, base_prefixes):
    """Each row gets ``vs <base>``: its time over the first row of its group whose runner starts
    with each of ``base_prefixes`` (a name -> runner-prefix mapping)."""
    for row in rows:
        group = [r for r in rows if all(r.get(k) == row.get(k) for k in group_keys)]
        for name, prefix in base_prefixes.items():
            base = next((r["s_per_epoch"] for r in group if r["runner"].startswith(prefix)), None)
            row[name] = row["s_per_epoch"] / base if base else None
    return rows


TRAINING = [
    ("size", "size", "{}"),
    ("batch", "batch", "{}"),
    ("runner", "runner", "{}"),
    ("s_per_epoch", "s/epoch", "{:.3f}"),
    ("vs_numpy", "vs NumPy by hand", "{:.2f}"),
    ("vs_eager", "vs PyTorch eager", "{:.2f}"),
    ("vs_floor", "vs floor", "{:.2f}"),
]
CONV = [
    ("model", "model", "{}"),
    ("runner", "runner", "{}"),
    ("s_per_epoch", "s/epoch", "{:.1f}"),
    ("vs_eager", "vs PyTorch eager", "{:.2f}"),
    ("vs_book", "book's code / this", "{:.1f}"),
]
PAIRS = [
    ("what", "what", "{}"),
    ("runner", "runner", "{}"),
    ("s", "s", "{:.3f}"),
    ("ratio", "ratio", "{:.2f}"),
]


def render(results, markdown=False) -> str:
    out = [f"{results['machine']}", ""]
    images = results.get("train_images", 60000)
    if results.get("training"):
        out += [
            f"training, s per epoch of {images} images (float32, SGD lr 0.1)",
            table(results["training"], TRAINING, markdown),
            "",
        ]
    if results.get("conv"):
        out += [
            f"ConvNets, batch 100, Adam (s per epoch of {images // 100} steps, from the median step)",
            table(results["conv"], CONV, markdown),
            "",
        ]
    if results.get("pairs"):
        out += ["comparisons", table(results["pairs"], PAIRS, markdown), ""]
    for key, heading in (
        ("inference", "inference, the book's 3-layer net over the 10000 test images"),
        ("memory", "memory (RSS, MB), each runner alone in a fresh process"),
    ):
        if results.get(key):
            columns = [
                (k, k, "{:.4f}" if isinstance(v, float) else "{}")
                for k, v in results[key][0].items()
            ]
            out += [heading, table(results[key], columns, markdown), ""]
    out += [f"skipped {line}" for line in results.get("skipped", [])]
    return "\n".join(out)
