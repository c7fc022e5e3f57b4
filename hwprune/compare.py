"""`hwprune compare`: the same model pruned for several devices, side by side.

From validated report.json files: a table per target (device, providers, where each latency comes from,
dense vs pruned latency, speedup, accuracy, MACs, parameters, budget) and three plots: kept channels per
group for every target on one chart (how the hardware changed the architecture), each target's latency per
runtime kernel (dense vs pruned), and accuracy against latency. Written as Markdown with PNGs beside it and
as one self-contained HTML page (images embedded, opens offline).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from hwprune import atomic, paths, report
from hwprune.errors import OutputError, ReportError

PLOTS = {"channels": "Kept channels per group", "latency_breakdown": "Latency per runtime kernel (predicted)",
         "accuracy_latency": "Accuracy against latency"}


@dataclass(frozen=True)
class Comparison:
    reports: list[dict[str, Any]]
    sources: list[Path]
    labels: list[str]  # the target, with the model when the reports prune different models

    @classmethod
    def load(cls, files: list[Path]) -> Comparison:
        if not files:
            raise ReportError("no reports given", hint="hwprune compare out/*/report.json")
        reports = [report.read(p) for p in files]
        several_models = len({r["model"] for r in reports}) > 1
        labels = [f"{r['target']} ({r['model']})" if several_models else r["target"] for r in reports]
        if len(set(labels)) != len(labels):
            duplicate = next(label for label in labels if labels.count(label) > 1)
            raise ReportError(f"two reports are both for '{duplicate}'", hint="give one report per target")
        return cls(reports, list(files), labels)

    def items(self) -> list[tuple[str, dict[str, Any]]]:
        return list(zip(self.labels, self.reports, strict=True))


def latency_source(r: dict[str, Any], which: str = "pruned") -> str:
    """Where a latency figure comes from, in words: measured on a host, or predicted from a profile."""
    m = r[which]
    if m["latency_source"] == "measured" and r["profile"].get("agents"):
        return f"measured on the device through agent {', '.join(r['profile']['agents'])}"
    if m["latency_source"] == "measured":
        return f"measured on {r['host']['hostname']} ({r['host']['cpu']})"
    return f"predicted from profile '{r['profile']['id']}' ({r['profile']['provenance']})"


def rows(c: Comparison) -> list[dict[str, str]]:
    out = []
    for label, r in c.items():
        d, p = r["dense"], r["pruned"]
        out.append({
            "target": label,
            "device": r["target_settings"]["description"],
            "providers": ", ".join(r["target_settings"]["providers"]),
            "latency": latency_source(r),
            "dense ms": f"{d['latency_ms']:.4f}",
            "pruned ms": f"{p['latency_ms']:.4f}",
            "speedup": f"{r['speedup']:.2f}×" if r["speedup"] else "—",
            "budget": f"{r['budget_ms']:.4f} ms ({r['target_settings']['budget']}): "
                      f"{'met' if r['budget_met'] else 'NOT met'}",
            "accuracy": (f"{d['accuracy']:.4f} → {p['accuracy']:.4f}"
                         + ("" if _metric(r) == "accuracy" else f" ({_metric(r)})")),
            "MACs": f"{d['macs'] / 1e6:.2f}M → {p['macs'] / 1e6:.2f}M",
            "params": f"{d['params'] / 1e3:.1f}k → {p['params'] / 1e3:.1f}k",
            "channel step": str(r["target_settings"]["channel_multiple"]),
        })
    return out


def plot_channels(c: Comparison, path: Path) -> None:
    import matplotlib.pyplot as plt
    groups = list(dict.fromkeys(g for r in c.reports for g in r["dense"]["widths"]))
    # capped: matplotlib refuses an image over 2^16 pixels a side (a report may list any number of groups)
    fig, ax = plt.subplots(figsize=(min(400.0, max(7.0, 0.7 * len(groups) * (1 + len(c.reports) / 3))), 4.2))
    width = 0.8 / (len(c.reports) + 1)
    dense = c.reports[0]["dense"]["widths"]
    entries = [(ax.bar([i for i in range(len(groups))], [dense.get(g, 0) for g in groups],
                       width * (len(c.reports) + 1), color="#dddddd", zorder=0), "dense")]
    for k, (label, r) in enumerate(c.items()):
        kept = r["pruned"]["widths"]
        xs = [i - 0.4 + width * (k + 1) for i in range(len(groups))]
        entries.append((ax.bar(xs, [kept.get(g, 0) for g in groups], width, zorder=2),
                        f"{label} (step {r['target_settings']['channel_multiple']})"))
    ax.set_xticks(range(len(groups)), [_plain(g) for g in groups], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("output channels kept")
    ax.set_title("Kept channels per coupled group")
    _legend(ax, entries, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def plot_breakdown(c: Comparison, path: Path) -> None:
    import matplotlib.pyplot as plt
    n = len(c.reports)
    fig, axes = plt.subplots(n, 1, figsize=(9, 2.6 * n), squeeze=False)
    for ax, (label, r) in zip(axes[:, 0], c.items(), strict=True):
        b = r["latency_breakdown"]
        dense, pruned = b["dense"], b["pruned"]
        ax.bar(range(len(dense)), [k["ms"] * 1000 for k in dense], color="#cccccc", label="dense")
        ax.bar(range(len(pruned)), [k["ms"] * 1000 for k in pruned], width=0.5, label="pruned")
        ticks = pruned if len(pruned) >= len(dense) else dense
        ax.set_xticks(range(len(ticks)), [_plain(f"{i}: {k['op']}") for i, k in enumerate(ticks)], rotation=60,
                      ha="right", fontsize=6)
        ax.set_ylabel("µs")
        ax.set_title(_plain(f"{label}: {len(pruned)} kernels, {b['source']} entries"), fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def _metric(report: dict) -> str:
    """What a report's accuracy figures are (its [eval] metric; top-1 accuracy by default)."""
    return (report.get("metric") or {}).get("name", "accuracy")


def plot_accuracy_latency(c: Comparison, path: Path) -> None:
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    entries = []
    for k, (label, r) in enumerate(c.items()):
        color = f"C{k}"
        d, p = r["dense"], r["pruned"]
        marker = "o" if p["latency_source"] == "measured" else "s"
        ax.annotate("", (p["latency_ms"], p["accuracy"]), (d["latency_ms"], d["accuracy"]),
                    arrowprops={"arrowstyle": "->", "color": color, "alpha": 0.6})
        ax.scatter([d["latency_ms"]], [d["accuracy"]], marker=marker, facecolors="none", edgecolors=color)
        entries.append((ax.scatter([p["latency_ms"]], [p["accuracy"]], marker=marker, color=color),
                        f"{label} ({p['latency_source']})"))
        ax.axvline(r["budget_ms"], color=color, linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale; dotted: budget; hollow: dense, filled: pruned)")
    ax.set_ylabel("test " + " / ".join(dict.fromkeys(_metric(r) for r in c.reports)))
    ax.set_title("Accuracy against latency per target")
    _legend(ax, entries, fontsize=8)
    ax.grid(alpha=0.3, which="both")
    _save(fig, path)


def _plain(text: str) -> str:
    """`text` shown as written: matplotlib reads a pair of `$` as math (`a_$x^2$` would render as a formula, and
    an unbalanced formula raises); an escaped `\\$` is a literal dollar sign."""
    return text.replace("$", r"\$")


def _legend(ax, entries: list[tuple[Any, str]], **kwargs) -> None:
    """A legend of (artist, label) as written: labels handed over explicitly, so one starting with `_` is not
    dropped (matplotlib's automatic legend skips those), and `$` is not read as math."""
    ax.legend([artist for artist, _ in entries], [_plain(label) for _, label in entries], **kwargs)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_plots(c: Comparison, folder: Path, stem: str) -> dict[str, Path]:
    """The three PNGs, written atomically into `folder`."""
    import matplotlib
    matplotlib.use("Agg")
    makers = {"channels": plot_channels, "latency_breakdown": plot_breakdown, "accuracy_latency": plot_accuracy_latency}
    written = {}
    for name, make in makers.items():
        path = paths.comparison_plot(folder, stem, name)
        with atomic.replacing(path) as tmp:  # a fresh temp name, never a link planted under a known one
            make(c, tmp)
        written[name] = path
    return written


def _notes(c: Comparison, text: Callable[[Any], str] = report.md_text,
           code: Callable[[Any], str] = report.md_code) -> list[str]:
    """The notes, every value from a report passed through `text` (or `code`): Markdown or HTML escaping."""
    notes = []
    for label, r in c.items():
        if r["profile"]["provenance"] == "analytic":
            notes.append(f"{text(label)}: every latency is a roofline prediction from published specs (analytic "
                         f"profile {code(r['profile']['id'])}), never measured; run "
                         f"{code('hwprune profile --target ' + r['target'])} on the device.")
        elif not r["profile"]["measured_here"]:
            notes.append(f"{text(label)}: latencies predicted from a profile measured on another host.")
    models = {r["model"] for r in c.reports}
    if len(models) > 1:
        notes.append(f"The reports prune different models ({', '.join(text(m) for m in sorted(models))}).")
    return notes


def _html_code(value: Any) -> str:
    return f"<code>{html.escape(str(value))}</code>"


def to_markdown(c: Comparison, images: dict[str, str]) -> str:
    table = rows(c)
    headers = list(table[0])
    lines = ["# hwprune: one model, several devices", "",
             "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(report.md_text(row[h]) for h in headers) + " |" for row in table]
    notes = _notes(c)
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    for name, title in PLOTS.items():
        lines += ["", f"## {title}", "", f"![{title}]({quote(images[name])})"]  # a space or ( in --md's name
    lines += ["", "Reports: " + ", ".join(report.md_code(p) for p in c.sources), ""]
    return "\n".join(lines)


def to_html(c: Comparison, pngs: dict[str, Path]) -> str:
    """One self-contained page: styles inline, images as data: URIs. The page marks on <body> how many
    images decoded (data-images-loaded), which the browser test reads."""
    table = rows(c)
    headers = list(table[0])
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(row[h])}</td>" for h in headers) + "</tr>" for row in table)
    figures = "".join(
        f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,'
        f'{base64.b64encode(pngs[name].read_bytes()).decode()}"><figcaption>{html.escape(title)}</figcaption></figure>'
        for name, title in PLOTS.items())
    notes = "".join(f"<li>{n}</li>" for n in _notes(c, html.escape, _html_code))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>hwprune comparison</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
th, td {{ border: 1px solid #bbb; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }}
th {{ background: #f0f0f0; }}
figure {{ margin: 1.5em 0; }} img {{ max-width: 100%; border: 1px solid #eee; }}
</style></head>
<body data-images-loaded="0">
<h1>hwprune: one model, several devices</h1>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
{f"<ul>{notes}</ul>" if notes else ""}
{figures}
<p>Reports: {html.escape(", ".join(str(p) for p in c.sources))}</p>
<script>
window.addEventListener("load", () => {{
  const decoded = Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0);
  document.body.dataset.imagesLoaded = decoded.length;
}});
</script>
</body></html>
"""


@dataclass(frozen=True)
class CompareOutputs:
    markdown: Path
    html: Path
    pngs: dict[str, Path]


def write(c: Comparison, md_path: Path, html_path: Path, force: bool = False) -> CompareOutputs:
    """Markdown (PNGs beside it) and HTML; earlier outputs are not replaced without `force`."""
    folder = md_path.parent
    stem = md_path.stem
    planned = [md_path, html_path, *(paths.comparison_plot(folder, stem, n) for n in PLOTS)]
    if md_path.resolve() == html_path.resolve():
        raise OutputError(f"--md and --html both name {md_path}", hint="give the two files different names")
    folders = [str(p) for p in planned if p.is_dir()]
    if folders:  # --force replaces files, never a folder
        raise OutputError(f"{folders[0]} is a folder, not a file", hint="choose other paths for --md / --html")
    existing = [str(p) for p in planned if p.exists()]
    if existing and not force:
        raise OutputError(f"{existing[0]} already exists", hint="pass --force to replace it, or choose other paths")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        html_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {folder}: {exc.strerror}", hint="choose a writable folder") from None
    pngs = render_plots(c, folder, stem)
    atomic.write_text(md_path, to_markdown(c, {n: p.name for n, p in pngs.items()}))
    atomic.write_text(html_path, to_html(c, pngs))
    return CompareOutputs(md_path, html_path, pngs)
