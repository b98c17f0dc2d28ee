"""Turn results.json into PNG plots and the markdown tables of docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"

#: (workload, our variant, the reference's variant, what is compared)
PAIRS = [
    ("empty RPC", "ours: GetPluginInfo", "GetPluginInfo", "GetPluginInfo: the gRPC stack alone"),
    (
        "empty RPC",
        "grpcio floor: GetPluginInfo",
        "GetPluginInfo",
        "GetPluginInfo on a bare grpcio server, no driver code (the floor of ours)",
    ),
    (
        "create",
        "ours: directory",
        "directory",
        "CreateVolume+DeleteVolume, directory (like for like)",
    ),
    ("create", "ours: block (loop)", "block (loop)", "CreateVolume+DeleteVolume, block"),
    (
        "create",
        "ours: ext4 image",
        "directory",
        "CreateVolume+DeleteVolume, our ext4 image vs their directory",
    ),
    ("node-fs", "ours: directory", "directory", "node cycle, directory (like for like)"),
    ("node-fs", "ours: ext4 image", "directory", "node cycle, our ext4 image vs their directory"),
    ("node-block", "ours: block (loop)", "block (loop)", "node cycle, block"),
]


def _get(results: dict[str, Any], workload: str, variant: str, conc: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = results["latency"].get(workload, {}).get(variant, {}).get(conc)
    return found


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}x"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def ratio_table(results: dict[str, Any]) -> list[str]:
    lines = [
        "| comparison | clients | ours p50 ms | Go p50 ms | ours/Go p50 | ours/Go p99 "
        "| ours/Go ops/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for workload, mine, theirs, what in PAIRS:
        for conc in ("1", "8"):
            a = _get(results, workload, mine, conc)
            if a is None:
                continue
            b = _get(results, workload, f"go: {theirs}", conc) or {}
            lines.append(
                f"| {what} | {conc} | {_ms(a['p50_ms'])} "
                f"| {_ms(b.get('p50_ms'))} | {_ratio(a['p50_ms'], b.get('p50_ms'))} "
                f"| {_ratio(a['p99_ms'], b.get('p99_ms'))} "
                f"| {_ratio(a['throughput'], b.get('throughput'))} |"
            )
    for label in ("ours: directory", "ours: ext4 image"):
        ours, go = results["sanity"].get(label), results["sanity"].get("go: directory")
        if ours and go:
            kind = label.removeprefix("ours: ")
            lines.append(
                f"| csi-sanity full run, wall ({kind} against their directory) | 1 "
                f"| {ours['wall_s'] * 1000:.0f} | {go['wall_s'] * 1000:.0f} "
                f"| {_ratio(ours['wall_s'], go['wall_s'])} | | |"
            )
            # The drivers advertise different capabilities, so csi-sanity runs more specs
            # against ours (the rest it skips): the time per spec it ran compares like for like.
            ours_spec, go_spec = _per_spec_ms(ours), _per_spec_ms(go)
            lines.append(
                f"| csi-sanity, wall per spec run ({kind}: {ours['passed'] + ours['failed']} "
                f"specs, theirs {go['passed'] + go['failed']}) | 1 | {_ms(ours_spec)} "
                f"| {_ms(go_spec)} | {_ratio(ours_spec, go_spec)} | | |"
            )
    return lines + floor_note(results)


def floor_note(results: dict[str, Any]) -> list[str]:
    """How far our GetPluginInfo is from grpcio's own, measured in the same rounds."""
    parts = []
    for conc in ("1", "8"):
        mine = _get(results, "empty RPC", "ours: GetPluginInfo", conc)
        floor = _get(results, "empty RPC", "grpcio floor: GetPluginInfo", conc)
        if mine and floor:
            parts.append(f"{_ratio(mine['p50_ms'], floor['p50_ms'])} at {conc} client(s)")
    if not parts:
        return []
    return [
        "",
        "GetPluginInfo, ours / the bare grpcio server (benchmarks/floor.py: grpcio's Python "
        "server with 16 workers, no interceptor, no driver code), p50: " + ", ".join(parts) + ".",
    ]


def _per_spec_ms(result: dict[str, Any]) -> float | None:
    ran = int(result["passed"]) + int(result["failed"])
    return float(result["wall_s"]) * 1000 / ran if ran else None


def memory_table(results: dict[str, Any]) -> list[str]:
    """The drivers' RSS, and the floor of our stack beside ours."""
    kinds = list(next(iter(results["rss"].values()), {}).keys())
    lines = ["| driver | " + " | ".join(kinds) + " |", "|---" * (1 + len(kinds)) + "|"]
    for name, values in results["rss"].items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.1f}" for v in values.values()) + " |")
    floor = results.get("floor") or {}
    ours = results["rss"].get("ours", {}).get("idle")
    if floor and ours:
        lines += [
            "",
            "Floor of our stack (benchmarks/floor.py, idle VmRSS, same interpreter and package "
            "path): CPython + grpcio + the CSI descriptors imported "
            f"**{floor['imports']:.1f} MiB**; the same with a grpcio server serving CSI "
            f"Identity on a unix socket, after answering one Probe as every driver here has "
            f"when its idle RSS is read, **{floor['server']:.1f} MiB**. Our driver idle: "
            f"**{ours:.1f} MiB**, {ours / floor['server'] - 1:+.1%} over the serving floor "
            f"({ours / floor['imports'] - 1:+.1%} over the imports alone).",
        ]
    return lines


def raw_table(results: dict[str, Any]) -> list[str]:
    lines = [
        "| workload | variant | conc | n | errors | p50 ms | p99 ms | mean ms | ops/s "
        "| peak RSS MiB | p50 per RPC (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for workload, variants in results["latency"].items():
        for variant, by_conc in variants.items():
            for conc, s in by_conc.items():
                rpcs = ", ".join(
                    f"{k.removeprefix('Node')} {v:.2f}" for k, v in s["per_rpc_p50_ms"].items()
                )
                peak = f"{s['rss_peak_mib']:.1f}" if s["rss_peak_mib"] else "—"
                lines.append(
                    f"| {workload} | {variant} | {conc} | {s['n']} | {s['errors']} | {s['p50_ms']:.2f} "
                    f"| {s['p99_ms']:.2f} | {s['mean_ms']:.2f} | {s['throughput']:.1f} | {peak} "
                    f"| {rpcs or '—'} |"
                )
    return lines


def write_markdown(results: dict[str, Any], doc: Path, out: Path, argv: list[str]) -> None:
    m = results["machine"]
    lines = [
        BEGIN,
        "",
        f"Generated by `python -m benchmarks.run {' '.join(argv)}` on {results['started']}"
        f"{' (quick run)' if results['quick'] else ''}: {m['cpu']}, {m['cores']} cores, "
        f"kernel {m['kernel']}, Python {m['python']}, {m['go']}. Load average (1, 5, 15 min) "
        f"at start {m['load average at start']}, at end {m.get('load average at end', '?')}: "
        "other work on the machine shows up as noise, most in the p99s.",
        "",
    ]
    lines += [
        f"Reference: `hostpathplugin` {results['reference_version']} (as the binary reports it "
        "with `--version`), built outside this repository from kubernetes-csi/"
        "csi-driver-host-path and named by `--go-binary`.",
        "",
        "The machine is shared: other engineers build Kubernetes and run test suites on the same "
        "2 cores while this runs. So every figure that is compared is a ratio from this one run, "
        "the drivers take turns in rounds (and alternate which goes first), csi-sanity runs twice "
        "per driver alternating (the faster run counts), and a run whose noise was obvious "
        "(ratios far from the neighbouring runs') was repeated.",
        "",
    ]
    lines += [f"Our driver ran from: {results['driver_source']}.", ""]
    lines += ["### Ratios (ours / Go; below 1 means we are faster)", "", *ratio_table(results), ""]
    lines += [
        "### Memory (VmRSS, MiB; 'with children' adds the mkfs, losetup and mount processes "
        "the driver forks)",
        "",
        *memory_table(results),
    ]
    lines += ["", "### Scale (directory volumes already in the catalog)", ""]
    lines += [
        "| variant | existing | CreateVolume p50 ms | CreateVolume p99 ms "
        "| ListVolumes first 100 p50 ms | ListVolumes all p50 ms | fill s |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant, points in results["scale"].items():
        for p in points:
            lines.append(
                f"| {variant} | {p['existing']} | {p['create_p50_ms']:.2f} | "
                f"{p['create_p99_ms']:.2f} | {p['list_page_p50_ms']:.2f} | "
                f"{p['list_all_p50_ms']:.2f} | {p['fill_s']:.1f} |"
            )
    if results["sanity"]:
        lines += ["", "### csi-sanity, full run", ""]
        lines += [
            "| driver | wall s | passed | failed | skipped | exit |",
            "|---|---|---|---|---|---|",
        ]
        for label, s in results["sanity"].items():
            lines.append(
                f"| {label} | {s['wall_s']:.1f} | {s['passed']} | {s['failed']} | "
                f"{s['skipped']} | {s['exit_code']} |"
            )
    for name, prof in results["profiles"].items():
        lines += [
            "",
            f"### Profile: {name} ({prof['samples']} py-spy samples inside our handlers, wall time)",
            "",
        ]
        lines += ["| innermost frame | share | | our function on the stack | share |"]
        lines += ["|---|---|---|---|---|"]
        own, incl = prof["self_top"], prof["inclusive_top"]
        for i in range(max(len(own), len(incl))):
            a = own[i] if i < len(own) else ("", 0.0)
            b = incl[i] if i < len(incl) else ("", 0.0)
            lines.append(
                f"| `{a[0]}` | {a[1]:.0%} | | `{b[0]}` | {b[1]:.0%} |"
                if b[0]
                else f"| `{a[0]}` | {a[1]:.0%} | | | |"
            )
    lines += ["", "### Raw numbers", "", *raw_table(results), ""]
    failures = [
        f"- {workload} / {variant} / {conc} clients: {s['errors']} failed, first: `{s['first_error']}`"
        for workload, variants in results["latency"].items()
        for variant, by_conc in variants.items()
        for conc, s in by_conc.items()
        if s["errors"]
    ]
    if failures:
        lines += ["Failed operations (left out of the latencies):", "", *failures, ""]
    durations = ", ".join(f"{k} {v:.0f} s" for k, v in results["durations_s"].items())
    lines += [f"Phase durations: {durations}.", ""]
    rel = out.relative_to(doc.parent) if out.is_relative_to(doc.parent) else out
    lines += [f"![latency]({rel}/latency.png)", "", f"![scale]({rel}/scale.png)", ""]
    lines += [f"![memory]({rel}/memory.png)", "", END]
    generated = "\n".join(lines)
    if doc.exists() and BEGIN in (text := doc.read_text(encoding="utf-8")) and END in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        doc.write_text(head + generated + tail, encoding="utf-8")
    else:
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_text("# Benchmarks\n\n" + generated + "\n", encoding="utf-8")


def plots(results: dict[str, Any], out: Path) -> None:
    import matplotlib  # noqa: PLC0415 - only the report needs it

    matplotlib.use("Agg")
    _latency_plot(results, out / "latency.png")
    _scale_plot(results, out / "scale.png")
    _memory_plot(results, out / "memory.png")


def _log_ticks(ax: Any) -> None:
    """Plain numbers at 1, 2, 5 x 10^n on a log axis, no labels on the minor ticks."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: PLC0415

    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0), numticks=20))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


COLOURS = {"ours": "#1f77b4", "go": "#d62728", "floor": "#7f7f7f", "grpcio floor": "#7f7f7f"}


def _colour(label: str) -> str:
    return COLOURS.get(label.split(":", 1)[0], "#333333")


def _latency_plot(results: dict[str, Any], path: Path) -> None:
    """One row per workload: p50 bars, p99 whiskers; 1 client solid, 8 clients pale."""
    import matplotlib.pyplot as plt  # noqa: PLC0415

    workloads = list(results["latency"])
    fig, axes = plt.subplots(len(workloads), 1, figsize=(11, 4.2 * len(workloads)), squeeze=False)
    width = 0.38
    for ax, workload in zip(axes[:, 0], workloads, strict=True):
        variants = list(results["latency"][workload])
        lowest = float("inf")
        for j, conc in enumerate(("1", "8")):
            xs, p50, p99, cols = [], [], [], []
            for i, v in enumerate(variants):
                s = results["latency"][workload][v].get(conc)
                if s is None:
                    continue
                xs.append(i + (j - 0.5) * width)
                p50.append(s["p50_ms"])
                p99.append(max(0.0, s["p99_ms"] - s["p50_ms"]))
                cols.append(_colour(v))
            bars = ax.bar(
                xs,
                p50,
                width,
                color=cols,
                alpha=1.0 if conc == "1" else 0.5,
                yerr=[[0] * len(p99), p99],
                capsize=3,
                edgecolor="black",
                linewidth=0.5,
            )
            for bar, value in zip(bars, p50, strict=True):
                # p50 at the top of its bar, left of the p99 whisker.
                ax.annotate(
                    f"{value:.1f}",
                    (bar.get_x() + bar.get_width() / 2, value),
                    xytext=(-3, 2),
                    textcoords="offset points",
                    ha="right",
                    va="bottom",
                    fontsize=8,
                )
            lowest = min([lowest, *p50])
        ax.set_xticks(range(len(variants)))
        ax.set_xticklabels(variants, fontsize=9)
        ax.set_ylabel("ms per cycle")
        ax.set_yscale("log")
        if lowest < float("inf"):
            ax.set_ylim(bottom=lowest / 2)
        _log_ticks(ax)
        ax.set_title(
            f"{workload}: p50 (bar) and p99 (whisker); left/solid = 1 client, right/pale = 8"
        )
        ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _scale_plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    series = (  # axis, field, line style, alpha, label after the variant's name
        (left, "create_p50_ms", "o-", None, " p50"),
        (left, "create_p99_ms", "o--", 0.5, " p99"),
        (right, "list_page_p50_ms", "o-", None, ": first 100"),
        (right, "list_all_p50_ms", "s--", 0.6, ": all, paged"),
    )
    for variant, points in results["scale"].items():
        xs = [p["existing"] for p in points]
        for ax, key, style, alpha, label in series:
            ys = [p[key] for p in points]
            ax.plot(xs, ys, style, color=_colour(variant), alpha=alpha, label=variant + label)
    for ax, title in ((left, "CreateVolume latency"), (right, "ListVolumes latency (p50)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        _log_ticks(ax)
        ax.set_xlabel("volumes already in the catalog")
        ax.set_ylabel("ms")
        ax.set_title(title)
        ax.grid(which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _memory_plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(8, 4.8))
    names = list(results["rss"])
    kinds = list(next(iter(results["rss"].values()), {}).keys())
    width = 0.8 / max(1, len(names))
    top = 60.0
    for i, name in enumerate(names):
        xs = [k + (i - (len(names) - 1) / 2) * width for k in range(len(kinds))]
        vals = [results["rss"][name][k] for k in kinds]
        top = max(top, *vals)
        bars = ax.bar(xs, vals, width, color=_colour(name), label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    floor = (results.get("floor") or {}).get("server")
    if floor:
        ax.axhline(floor, color=COLOURS["floor"], linestyle=":", label="floor of our stack")
        ax.axhline(floor * 1.1, color="black", linestyle=":", label="target: idle within 10% of it")
    ax.set_ylim(0, top * 1.35)
    ax.set_xticks(range(len(kinds)))
    ax.set_xticklabels([k.replace(", ", ",\n") for k in kinds])
    ax.set_ylabel("VmRSS, MiB")
    ax.set_title("Driver memory")
    ax.legend(loc="upper left", ncol=3, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
