#!/usr/bin/python3
# Turns the benchmark's raw measurements into the Markdown tables that nbd.sh prints and that
# docs/performance.md quotes. Kept apart from the shell script because ratios, "best peer"
# selection and column alignment are painful in bash and awk.
#
# Usage: nbd_report.py RESULTS.tsv [MEMORY.tsv]
#   RESULTS.tsv: server job iops mb_per_s p99_us cpu_us_per_request syscalls_per_request
#                (one line per run; several rounds give several lines per server and job)
#   MEMORY.tsv:  server connections rss_before_kib rss_after_kib
# Missing values are written as "-" by nbd.sh and shown as "-" here.

import sys

SUBJECT = "lunad"      # the server the ratios are about
CPU_REFERENCE = "nbdkit"  # the issue states CPU targets relative to nbdkit


def number(text):
    try:
        return float(text)
    except ValueError:
        return None


def show(value, digits=0):
    if value is None:
        return "-"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def ratio(top, bottom):
    if top is None or bottom is None or bottom == 0:
        return None
    return top / bottom


def markdown(header, rows):
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    # First column (labels) left-aligned, numbers right-aligned.
    def line(cells):
        padded = [str(c).ljust(w) if i == 0 else str(c).rjust(w)
                  for i, (c, w) in enumerate(zip(cells, widths))]
        return "| " + " | ".join(padded) + " |"
    rule = [":" + "-" * (w + 1) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)]
    out = [line(header), "|" + "|".join(rule) + "|"]
    out += [line(row) for row in rows]
    return "\n".join(out)


def median_run(runs):
    """With several rounds, keep the run with the median IOPS whole, so that one row's IOPS,
    latency and CPU all come from the same run."""
    measured = sorted((r for r in runs if r["iops"] is not None), key=lambda r: r["iops"])
    if not measured:
        return runs[0]
    return measured[(len(measured) - 1) // 2]


def load(path):
    with open(path) as handle:
        return [line.rstrip("\n").split("\t") for line in handle if line.strip()]


def throughput_table(records):
    servers, jobs, runs = [], [], {}
    for server, job, iops, mbps, p99, cpu, syscalls in records:
        if server not in servers:
            servers.append(server)
        if job not in jobs:
            jobs.append(job)
        runs.setdefault((server, job), []).append({
            "iops": number(iops), "mbps": number(mbps), "p99": number(p99),
            "cpu": number(cpu), "syscalls": number(syscalls),
        })
    data = {key: median_run(value) for key, value in runs.items()}
    peers = [s for s in servers if s != SUBJECT]
    has_subject = SUBJECT in servers

    header = ["job"]
    for server in servers:
        header += [f"{server} IOPS", f"{server} MB/s", f"{server} p99 µs"]
    if has_subject:
        header += [f"{SUBJECT} ÷ {peer}" for peer in peers]
    header += [f"{server} CPU µs/req" for server in servers]
    if has_subject and CPU_REFERENCE in peers:
        header.append(f"{SUBJECT} CPU ÷ {CPU_REFERENCE}")
    header += [f"{server} syscalls/req" for server in servers]

    rows = []
    for job in jobs:
        cell = lambda server, key: data.get((server, job), {}).get(key)
        row = [job]
        for server in servers:
            row += [show(cell(server, "iops")), show(cell(server, "mbps")), show(cell(server, "p99"))]
        if has_subject:
            # IOPS and MB/s give the same ratio (same block size), so one column per peer;
            # "*" marks the peer with the highest IOPS in this row, the one to beat.
            scored = [p for p in peers if cell(p, "iops") is not None]
            best = max(scored, key=lambda p: cell(p, "iops")) if scored else None
            for peer in peers:
                value = show(ratio(cell(SUBJECT, "iops"), cell(peer, "iops")), 2)
                row.append(value + ("*" if peer == best else ""))
        row += [show(cell(server, "cpu"), 1) for server in servers]
        if has_subject and CPU_REFERENCE in peers:
            row.append(show(ratio(cell(SUBJECT, "cpu"), cell(CPU_REFERENCE, "cpu")), 2))
        row += [show(cell(server, "syscalls"), 2) for server in servers]
        rows.append(row)
    return markdown(header, rows)


def memory_table(records):
    header = ["server", "idle connections", "RSS before KiB", "RSS after KiB", "KiB per connection"]
    rows = []
    for server, connections, before, after in records:
        count, rss_before, rss_after = number(connections), number(before), number(after)
        per_connection = None
        if count and rss_before is not None and rss_after is not None:
            per_connection = (rss_after - rss_before) / count
        rows.append([server, show(count), show(rss_before), show(rss_after), show(per_connection, 1)])
    return markdown(header, rows)


def main():
    if len(sys.argv) not in (2, 3):
        print("usage: nbd_report.py RESULTS.tsv [MEMORY.tsv]", file=sys.stderr)
        return 2
    tables = []
    results = load(sys.argv[1])
    if results:
        tables.append(throughput_table(results))
    memory = load(sys.argv[2]) if len(sys.argv) == 3 else []
    if memory:
        tables.append(memory_table(memory))
    print("\n\n".join(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
