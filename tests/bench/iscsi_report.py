#!/usr/bin/python3
# Turns iscsi.sh's raw measurements into the Markdown tables it prints (and docs/performance.md
# quotes). Shares nbd_report.py's formatting and median helpers.
#
# Usage: iscsi_report.py RESULTS.tsv
#   RESULTS.tsv: server job iops mb_per_s server_cpu_us_per_request client_cpu_us_per_request
#                server_syscalls_per_request (one line per run; "-" when missing)
# Servers: lunad, tgt, tgt-aio, lunad-direct (iSCSI) and nbd (lunad's NBD listener).

import sys

from nbd_report import markdown, median_run, number, ratio, show

SUBJECT = "lunad"
PEERS = ("tgt", "tgt-aio")
LABELS = {
    "lunad": "lunad",
    "tgt": "tgt rdwr",
    "tgt-aio": "tgt aio (O_DIRECT)",
    "lunad-direct": "lunad cache=none",
    "nbd": "lunad NBD",
}


def load(path):
    runs, servers, jobs = {}, [], []
    with open(path) as handle:
        for line in handle:
            if not line.strip():
                continue
            server, job, iops, mbps, cpu, client, syscalls = line.rstrip("\n").split("\t")
            if server not in servers:
                servers.append(server)
            if job not in jobs:
                jobs.append(job)
            runs.setdefault((server, job), []).append({
                "iops": number(iops), "mbps": number(mbps), "cpu": number(cpu),
                "client": number(client), "syscalls": number(syscalls),
            })
    return servers, jobs, {key: median_run(value) for key, value in runs.items()}


def throughput_table(servers, jobs, data):
    # One figure per row: MB/s for the 1 MiB jobs, IOPS for the 4 KiB ones (ratios are the same).
    def figure(server, job):
        key = "mbps" if "-1m-" in job else "iops"
        return data.get((server, job), {}).get(key)

    peers = [p for p in PEERS if p in servers]
    header = ["job", "unit"] + [LABELS[s] for s in servers if s != "nbd"]
    if SUBJECT in servers and peers:
        header.append("lunad ÷ best tgt")
    if SUBJECT in servers and "nbd" in servers:
        header += [LABELS["nbd"], "lunad iSCSI ÷ NBD"]
    if "lunad-direct" in servers and "tgt-aio" in servers:
        header.append("cache=none ÷ tgt aio")
    rows = []
    for job in jobs:
        digits = 0
        row = [job, "MB/s" if "-1m-" in job else "IOPS"]
        row += [show(figure(s, job), digits) for s in servers if s != "nbd"]
        if SUBJECT in servers and peers:
            scored = [p for p in peers if figure(p, job) is not None]
            best = max(scored, key=lambda p: figure(p, job)) if scored else None
            value = show(ratio(figure(SUBJECT, job), figure(best, job) if best else None), 2)
            row.append(value + (" (aio)" if best == "tgt-aio" else ""))
        if SUBJECT in servers and "nbd" in servers:
            row += [show(figure("nbd", job), digits), show(ratio(figure(SUBJECT, job), figure("nbd", job)), 2)]
        if "lunad-direct" in servers and "tgt-aio" in servers:
            row.append(show(ratio(figure("lunad-direct", job), figure("tgt-aio", job)), 2))
        rows.append(row)
    return markdown(header, rows)


def cost_table(servers, jobs, data):
    header = ["job", "server", "server CPU µs/req", "client CPU µs/req", "server syscalls/req"]
    rows = []
    for job in jobs:
        for server in servers:
            run = data.get((server, job), {})
            rows.append([job, LABELS[server], show(run.get("cpu"), 1), show(run.get("client"), 1),
                         show(run.get("syscalls"), 2)])
    return markdown(header, rows)


def main():
    if len(sys.argv) != 2:
        print("usage: iscsi_report.py RESULTS.tsv", file=sys.stderr)
        return 2
    servers, jobs, data = load(sys.argv[1])
    if not jobs:
        print("(no results)")
        return 0
    print(throughput_table(servers, jobs, data))
    print()
    print("CPU time per request, whole window of each run (server: all threads, /proc/PID/stat; "
          "client: user+sys of iscsi-perf, fio or qemu-img):")
    print()
    print(cost_table(servers, jobs, data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
