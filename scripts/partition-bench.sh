#!/usr/bin/env bash
# Partition figures (issue 14), a benchmark, not a test: all in ONE run on this machine, so that
# the figures compare like with like on a shared, noisy machine. Cluster mode, a throwaway
# `nats-server -js` (R=1), PostgreSQL from DATABASE_URL, every instance on loopback.
#   1. state memory: for n in 1 2 3, a fresh cluster of n instances (fresh database, fresh
#      processes), the contract's pipeline with BENCH_PARTITIONS partitions loaded by `eddy load`
#      until status.keys.sessions holds BENCH_MEM_KEYS keys, every partition's consumer lag 0:
#      each instance's RSS (process_resident_memory_bytes) and session keys (eddy_partition_keys),
#      and its RSS at start (empty);
#   2. partition moves: 2 instances, BENCH_MOVE_PARTITIONS partitions, loaded to BENCH_MOVE_KEYS
#      keys, a manual checkpoint, BENCH_AFTER_EVENTS more events after it (the moves replay
#      them), then BENCH_MOVE_RUNS times:
#      planned: an instance (re)started: one partition moves to it; from the old owner giving
#        it up (the first 503 for a key of it, or /v1/cluster showing another owner) to the first
#        200 for that key, polled every BENCH_POLL_MS at the leader and at the new instance;
#      crash: kill -9 of an instance owning a partition, not the leader: from the kill to the
#        first 200 for a key of its partition, polled at both other instances (includes the
#        lease timeout); the killed instance is the next run's planned move;
#   3. state queries, forwarded vs local: BENCH_QUERIES single-key state queries, sequential,
#      one keep-alive connection, random keys among u0..u<BENCH_QUERY_KEYSPACE-1>, at one
#      instance of the loaded 3-instance cluster: p50 and p99 of those whose partition it owns
#      (answered in-process) and of the others (forwarded to the owner over NATS).
# Prints a summary table. A fresh database eddy_bench_<pid> on DATABASE_URL's server is made
# (again for each cluster) and dropped; every process started here is stopped by its PID, and
# the temp dir removed, also on failure.
# Usage: DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres scripts/partition-bench.sh
# Knobs: BENCH_PARTITIONS (6: divides by 1, 2 and 3), BENCH_MEM_INSTANCES ("1 2 3"; "" skips 1.),
# BENCH_USERS (1500000: the load generator's 2M template events then hold ~1.1M distinct
# users), BENCH_MEM_KEYS (1000000), BENCH_MOVE_PARTITIONS (3), BENCH_MOVE_KEYS (1000000),
# BENCH_AFTER_EVENTS (100000: events taken after the checkpoint, at least), BENCH_MOVE_RUNS (3),
# BENCH_POLL_MS (20), BENCH_QUERIES (2000), BENCH_QUERY_KEYSPACE (1000000), BENCH_BATCH (1000),
# BENCH_CONNECTIONS (9), BENCH_LEASE_TIMEOUT (5s), BENCH_KEEP (set: the temp dir with every log
# is kept when the run fails).
# What it shares with scripts/cluster-bench.sh is in scripts/bench-lib.sh.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

partitions=${BENCH_PARTITIONS:-6}
mem_instances=${BENCH_MEM_INSTANCES-1 2 3}
users=${BENCH_USERS:-1500000}
mem_keys=${BENCH_MEM_KEYS:-1000000}
move_partitions=${BENCH_MOVE_PARTITIONS:-3}
move_keys=${BENCH_MOVE_KEYS:-1000000}
after_events_wanted=${BENCH_AFTER_EVENTS:-100000}
runs=${BENCH_MOVE_RUNS:-3}
poll_ms=${BENCH_POLL_MS:-20}
queries=${BENCH_QUERIES:-2000}
query_keyspace=${BENCH_QUERY_KEYSPACE:-1000000}
batch=${BENCH_BATCH:-1000}
connections=${BENCH_CONNECTIONS:-9}
lease_timeout=${BENCH_LEASE_TIMEOUT:-5s}

bench_name=partition-bench
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

mib() { python3 -c "print(f'{$1 / 1048576:.0f}')"; }

# The helper: /metrics parsing, key → partition (CRC-32C), the move watcher (polls every
# BENCH_POLL_MS on keep-alive connections, one thread per poll), the query timer. Python's
# standard library only.
helper="$work/partition_bench.py"
cat >"$helper" <<'PY'
import datetime, http.client, json, os, random, re, signal, sys, threading, time, urllib.parse

_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ (0x82F63B78 if _c & 1 else 0)
    _TABLE.append(_c)


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283  # the standard check value


def key_group(key):
    return crc32c(key.encode()) % 256


def partition_key_groups(p, i):
    size, extra = 256 // p, 256 % p
    first = i * size + min(i, extra)
    return [first, first + size + (1 if i < extra else 0) - 1]


def partition_of(parts, key):
    """The id of the partition of `parts` (/v1/cluster's list) that holds `key`."""
    g = key_group(key)
    for p in parts:
        first, last = p["key_groups"]
        if first <= g <= last:
            return p["id"]
    raise ValueError(f"no partition holds key group {g}")


class Client:
    """One keep-alive HTTP/1.1 connection; get() answers (status, body), status 0 for none."""

    def __init__(self, url, timeout=15.0):
        u = urllib.parse.urlsplit(url)
        self.host, self.port, self.timeout, self.conn = u.hostname, u.port, timeout, None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def get(self, path, method="GET"):
        for attempt in (0, 1):
            reused = self.conn is not None
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                self.conn.request(method, path)
                r = self.conn.getresponse()
                body = r.read()
                if (r.getheader("connection") or "").lower() == "close":
                    self.close()
                return r.status, body
            except (OSError, http.client.HTTPException):
                self.close()
                if not reused or attempt == 1:
                    return 0, b""
        return 0, b""


def get_json(url, path, timeout=10.0):
    c = Client(url, timeout)
    try:
        status, body = c.get(path)
    finally:
        c.close()
    if status != 200:
        raise RuntimeError(f"GET {url}{path} answered {status}")
    return json.loads(body)


_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metrics(url, pipeline):
    """rss, sessions keys, {partition: lag}, {partition: sessions keys} of one instance."""
    c = Client(url, 10.0)
    try:
        status, body = c.get("/metrics")
    finally:
        c.close()
    if status != 200:
        raise RuntimeError(f"GET {url}/metrics answered {status}")
    rss, lag, keys = None, {}, {}
    for line in body.decode().splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        name, labels, value = m.group(1), dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))
        if name == "process_resident_memory_bytes":
            rss = int(value)
        elif name == "eddy_partition_consumer_lag_records" and labels.get("pipeline") == pipeline:
            lag[int(labels["partition"])] = int(value)
        elif (name == "eddy_partition_keys" and labels.get("pipeline") == pipeline
              and labels.get("operator") == "sessions"):
            keys[int(labels["partition"])] = int(value)
    return rss, lag, keys


def cmd_metrics(url, pipeline, pid):
    """Prints "rss sessions_keys lag_sum owned" (owned: partition ids, comma-separated)."""
    rss, lag, keys = metrics(url, pipeline)
    if rss is None:  # not reported: the kernel's figure
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))
    owned = ",".join(str(p) for p in sorted(lag)) or "-"
    print(rss, sum(keys.values()), sum(lag.values()), owned)


def cmd_settle(pipeline, cluster_url, timeout, *urls):
    """Waits until every partition has a live owner and every partition's lag (each reported
    by exactly one instance) is 0, twice in a row; prints the cluster's pipeline entry."""
    deadline, good, last = time.time() + float(timeout), 0, None
    while time.time() < deadline:
        try:
            view = get_json(cluster_url, "/v1/cluster")
            entry = next(p for p in view["pipelines"] if p["name"] == pipeline)
            alive = {m["node"] for m in view["members"] if m["alive"]}
            owners_ok = all(p["owner"] in alive for p in entry["partitions"])
            reported = {}
            for u in urls:
                for part, lag in metrics(u, pipeline)[1].items():
                    reported.setdefault(part, []).append(lag)
            lags_ok = (sorted(reported) == [p["id"] for p in entry["partitions"]]
                       and all(v == [0] for v in reported.values()))
            last = {"owners": {p["id"]: p["owner"] for p in entry["partitions"]}, "lags": reported}
            good = good + 1 if owners_ok and lags_ok else 0
            if good >= 2:
                print(json.dumps(entry))
                return 0
        except (RuntimeError, StopIteration, OSError, ValueError) as e:
            last, good = f"{e}", 0
        time.sleep(0.5)
    print(f"not settled within {timeout} s; last seen: {last}", file=sys.stderr)
    return 1


def cmd_probes(cluster_url, pipeline):
    """Prints {partition: key}: per partition the first u<n> with state (200) in sessions."""
    view = get_json(cluster_url, "/v1/cluster")
    parts = next(p for p in view["pipelines"] if p["name"] == pipeline)["partitions"]
    for p in parts:  # the server's ranges are the documented ones
        assert p["key_groups"] == partition_key_groups(len(parts), p["id"]), p
    probes, c, n = {}, Client(cluster_url), 0
    while len(probes) < len(parts) and n < 100000:
        key, n = f"u{n}", n + 1
        part = partition_of(parts, key)
        if part in probes:
            continue
        status, _ = c.get(f"/v1/pipelines/{pipeline}/operators/sessions/state?key={key}")
        if status == 200:
            probes[part] = key
    c.close()
    print(json.dumps(probes))


def log_time(path, pattern, after):
    """The time of the first line of log `path` matching `pattern` at or after `after`."""
    try:
        with open(path, errors="replace") as f:
            for line in f:
                line = re.sub(r"\x1b\[[0-9;]*m", "", line)
                if not re.search(pattern, line):
                    continue
                t = datetime.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()
                if t >= after:
                    return t
    except (OSError, ValueError):
        pass
    return None


def cmd_watch(config_path):
    """A move, watched. Every interval, per (instance, partition), a request for the partition's
    probe key is sent, whether or not the ones before are answered (a thread pool, keep-alive
    connections per thread: a request that hangs does not hide the recovery); /v1/cluster is
    read every interval at cluster_url, every instance's /metrics every 100 ms (lags). Planned:
    writes ready_file once every poll has answered (the script then starts the instance), the
    give-up is the first 503 at giveup_nodes or /v1/cluster showing another owner. Crash: writes
    ready_file, then waits for killed_file (the kill's time, written just before the kill).
    The result goes to out as JSON."""
    from concurrent.futures import ThreadPoolExecutor
    cfg = json.load(open(config_path))
    pipeline, interval, mode = cfg["pipeline"], cfg["interval"], cfg["mode"]
    probes = {int(k): v for k, v in cfg["probes"].items()}
    watched = [int(p) for p in cfg["partitions"]]
    lock, stop = threading.Lock(), threading.Event()
    answers = {}  # (node, partition) -> [(sent, answered, status)]
    views = []  # (answered, {partition: owner}, leader)
    lags = {}  # node -> [(answered, {partition: lag})]
    primed = set()
    local = threading.local()
    pool = ThreadPoolExecutor(max_workers=256)

    def ask(node, url, part):
        clients = getattr(local, "clients", None)
        if clients is None:
            clients = local.clients = {}
        if url not in clients:
            clients[url] = Client(url)
        sent = time.time()
        status, _ = clients[url].get(f"/v1/pipelines/{pipeline}/operators/sessions/state?key={probes[part]}")
        answered = time.time()
        with lock:
            answers.setdefault((node, part), []).append((sent, answered, status))
            primed.add((node, part))

    def poll_keys():
        nxt = time.time()
        while not stop.is_set():
            for node, url in cfg["query_urls"].items():
                for part in watched:
                    pool.submit(ask, node, url, part)
            nxt += interval
            stop.wait(max(0.0, nxt - time.time()))

    def poll_cluster():
        c = Client(cfg["cluster_url"])
        while not stop.is_set():
            sent = time.time()
            status, body = c.get("/v1/cluster")
            if status == 200:
                entry = next((p for p in json.loads(body)["pipelines"] if p["name"] == pipeline), None)
                if entry is not None:
                    with lock:
                        views.append((time.time(), {p["id"]: p["owner"] for p in entry["partitions"]}, entry["leader"]))
                        primed.add("cluster")
            stop.wait(max(0.0, sent + interval - time.time()))
        c.close()

    def poll_lag(node, url):
        while not stop.is_set():
            try:
                lag = metrics(url, pipeline)[1]
            except (RuntimeError, OSError, ValueError):
                lag = None
            if lag is not None:
                with lock:
                    lags.setdefault(node, []).append((time.time(), lag))
            stop.wait(0.1)

    threads = [threading.Thread(target=poll_cluster, daemon=True), threading.Thread(target=poll_keys, daemon=True)]
    threads += [threading.Thread(target=poll_lag, args=(n, u), daemon=True) for n, u in cfg["query_urls"].items()]
    for t in threads:
        t.start()
    needed = {"cluster"} | {(n, p) for n in cfg["query_urls"] for p in watched}
    for _ in range(3000):  # every poll answered once: the baseline
        with lock:
            if needed <= primed:
                break
        time.sleep(0.01)
    else:
        print("the polls did not answer within 30 s", flush=True)
        return 1
    with lock:
        initial = dict(views[-1][1])
    open(cfg["ready_file"], "w").close()
    t_start = time.time()
    if mode == "crash":
        while not os.path.exists(cfg["killed_file"]) or os.path.getsize(cfg["killed_file"]) == 0:
            time.sleep(0.001)
        t_start = float(open(cfg["killed_file"]).read())
    deadline, done_at = t_start + cfg["timeout"], None

    def analyse():
        with lock:
            vs, ans = list(views), {k: list(v) for k, v in answers.items()}
        current, result = vs[-1][1], {}
        for part in watched:
            r = {"id": part, "initial_owner": initial.get(part), "owner": current.get(part)}
            changed = [t for (t, owners, _) in vs if t >= t_start and owners.get(part) != initial.get(part)]
            r["t_cluster_change"] = changed[0] if changed else None
            r503 = [a for n in cfg.get("giveup_nodes", cfg["query_urls"])
                    for (s, a, st) in ans.get((n, part), []) if s >= t_start and st == 503]
            r["t_first_503"] = min(r503) if r503 else None
            if mode == "crash":
                r["t_giveup"] = t_start
            else:  # a 503 of the instance just starting is its start, not the give-up
                candidates = [t for t in (r["t_cluster_change"], r["t_first_503"]) if t is not None]
                r["t_giveup"] = min(candidates) if candidates else None
            r["first_200"], r["codes"], r["slowest_ms"], r["t_outage"] = {}, {}, 0, None
            if r["t_giveup"] is not None:
                # The outage starts with the first request sent after the give-up (or the kill)
                # that is not answered 200: before it, the old owner may still answer (a process
                # killed -9 dies some ms after the signal).
                failed = [s for n in cfg["query_urls"] for (s, a, st) in ans.get((n, part), [])
                          if s >= r["t_giveup"] and st != 200]
                r["t_outage"] = min(failed) if failed else None
                since = r["t_outage"] if r["t_outage"] is not None else float("inf")
                after = {n: sorted(x for x in ans.get((n, part), []) if x[0] >= since) for n in cfg["query_urls"]}
                for n, xs in after.items():
                    ok = [a for (s, a, st) in xs if st == 200]
                    r["first_200"][n] = min(ok) if ok else None
                ok = [t for t in r["first_200"].values() if t is not None]
                r["t_first_200"] = min(ok) if ok else None
                for xs in after.values():
                    for (s, a, st) in xs:
                        if r["t_first_200"] is None or a < r["t_first_200"]:
                            r["codes"][str(st)] = r["codes"].get(str(st), 0) + 1
                        if r["t_first_200"] is None or s <= r["t_first_200"]:
                            r["slowest_ms"] = max(r["slowest_ms"], round((a - s) * 1000))
            result[part] = r
        return result

    while time.time() < deadline:
        time.sleep(0.05)
        result = analyse()
        moved = [p for p, r in result.items() if r["owner"] and r["owner"] != r["initial_owner"]]
        served = all(r["owner"] and r["first_200"] and all(v is not None for v in r["first_200"].values())
                     for r in result.values() if r["t_giveup"] is not None)
        if moved and served:
            done_at = done_at or time.time()
            with lock:  # the new owner's lag read 0 last, after a positive one (or 3 s on)
                series = {p: [l[p] for (t, l) in lags.get(result[p]["owner"], []) if p in l] for p in moved}
            lag_done = all(xs and xs[-1] == 0 and (max(xs) > 0 or time.time() - done_at >= 3)
                           for xs in series.values())
            # A little longer: a second move would show, and the new owner's lag reach 0.
            if time.time() - done_at >= cfg["settle"] and (lag_done or time.time() - done_at >= 10):
                break
        else:
            done_at = None
    timed_out = time.time() >= deadline
    stop.set()
    for t in threads:
        t.join(timeout=20)
    pool.shutdown(wait=True)
    result = analyse()
    for part, r in result.items():
        new, base = r["owner"], (r["t_giveup"] if r["t_giveup"] is not None else t_start)
        with lock:
            seen = [(t, l[part]) for (t, l) in lags.get(new, []) if part in l and t >= base]
        r["t_lag_seen"] = seen[0][0] if seen else None
        # Caught up: the first 0 after the last positive lag (a partition just taken reads 0
        # until its follower starts).
        last_positive = max((i for i, (_, l) in enumerate(seen) if l > 0), default=-1)
        r["t_lag0"] = next((t for (t, l) in seen[last_positive + 1:] if l == 0), None)
        r["max_lag_seen"] = max((l for (_, l) in seen), default=None)
        r["lag_series"] = [[round((t - base) * 1000), l] for (t, l) in seen[:100]]
        log = cfg["logs"].get(new)
        if log and new != r["initial_owner"]:
            pat = rf"pipeline=\"?{re.escape(pipeline)}\"? partition={part}\b"
            r["t_lease_taken"] = log_time(log, "partition lease taken " + pat, base - 1.0)
            r["t_started"] = log_time(log, "partition started " + pat, base - 1.0)
    out = {"mode": mode, "t_start": t_start, "timed_out": timed_out, "partitions": {str(p): r for p, r in result.items()}}
    json.dump(out, open(cfg["out"], "w"), indent=1)
    for part, r in result.items():
        if r["t_giveup"] is None:
            continue

        def rel(t):
            return "-" if t is None else f"{(t - r['t_giveup']) * 1000:.0f}"

        per = " ".join(f"{n}:{rel(t)}" for n, t in r["first_200"].items())
        print(f"partition {part}: {r['initial_owner'] or '(none)'} -> {r['owner'] or '(none)'}; ms after the "
              f"{'kill' if mode == 'crash' else 'give-up'}: first 200 {rel(r.get('t_first_200'))} ({per}), "
              f"lease taken {rel(r.get('t_lease_taken'))}, partition started {rel(r.get('t_started'))}, "
              f"in the new owner's /metrics {rel(r['t_lag_seen'])}, lag 0 {rel(r['t_lag0'])} (max lag seen "
              f"{r['max_lag_seen']} records), /v1/cluster at {cfg['cluster_url']} changed {rel(r['t_cluster_change'])}, "
              f"first 503 {rel(r['t_first_503'])}; answers before the first 200: {r['codes']}, slowest {r['slowest_ms']} ms",
              flush=True)
        runs = []  # the new owner's lag readings, runs of equal values collapsed: ms:records
        for (t, l) in r.get("lag_series", []):
            if not runs or runs[-1][1] != l:
                runs.append((t, l))
        if runs:
            print("  its lag readings (ms after the " + ("kill" if mode == "crash" else "give-up") + ":records): "
                  + " ".join(f"{t}:{l}" for (t, l) in runs[:12]), flush=True)
    if timed_out:
        print(f"the move was not complete within {cfg['timeout']} s", flush=True)
    return 0


def pct(xs, q):
    xs = sorted(xs)
    return xs[max(0, -(-len(xs) * q // 100) - 1)] if xs else float("nan")


def cmd_queries(url, pipeline, count, keyspace, seed, out):
    """`count` single-key state queries in sequence on one keep-alive connection."""
    view = get_json(url, "/v1/cluster")
    node = view["node"]
    entry = next(p for p in view["pipelines"] if p["name"] == pipeline)
    owners = {p["id"]: p["owner"] for p in entry["partitions"]}
    rng = random.Random(int(seed))
    c = Client(url, 10.0)
    c.get(f"/v1/pipelines/{pipeline}/operators/sessions/state?key=u0")  # the connection
    times = {"local": [], "forwarded": []}
    codes = {"local": {}, "forwarded": {}}
    for _ in range(int(count)):
        key = f"u{rng.randrange(int(keyspace))}"
        kind = "local" if owners[partition_of(entry["partitions"], key)] == node else "forwarded"
        t = time.perf_counter()
        status, _ = c.get(f"/v1/pipelines/{pipeline}/operators/sessions/state?key={key}")
        times[kind].append((time.perf_counter() - t) * 1000)
        codes[kind][str(status)] = codes[kind].get(str(status), 0) + 1
    c.close()
    after = next(p for p in get_json(url, "/v1/cluster")["pipelines"] if p["name"] == pipeline)
    stable = {p["id"]: p["owner"] for p in after["partitions"]} == owners
    res = {"node": node, "owners": owners, "stable": stable}
    for kind in times:
        res[kind] = {"count": len(times[kind]), "p50": pct(times[kind], 50), "p99": pct(times[kind], 99),
                     "max": max(times[kind], default=float("nan")), "codes": codes[kind]}
        print(f"{kind}: {len(times[kind])} queries, p50 {res[kind]['p50']:.2f} ms, p99 {res[kind]['p99']:.2f} ms, "
              f"max {res[kind]['max']:.2f} ms, answers {codes[kind]}")
    print(f"asked {node} ({url}); owners {owners}; unchanged during the run: {stable}")
    json.dump(res, open(out, "w"), indent=1)


def cmd_rel(a, b):
    print("-" if a in ("", "null") or b in ("", "null") else f"{(float(a) - float(b)) * 1000:.0f}")


if __name__ == "__main__":
    sys.exit(globals()["cmd_" + sys.argv[1]](*sys.argv[2:]) or 0)
PY
bench() { python3 "$helper" "$@"; }

machine_before
cores=$(nproc)
date_started=$(date -u '+%Y-%m-%d %H:%M:%S UTC')

build_eddy
tree="$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git status --porcelain -- src 2>/dev/null | grep -q . && echo ' + uncommitted changes in src/' || true)"
echo "built from $tree"

# fresh_db: database $db dropped (with its connections) and made again: each cluster its own.
fresh_db() {
  drop_db
  db_created=
  create_db
  echo "PostgreSQL: fresh database $db"
}

start_nats

# The instances of the current cluster: n0..n2, named "$cluster-n<i>" for their data dir and
# log ($work/<name>.log, appended: a restarted instance keeps its history).
cluster=""
declare -a node_port=() node_url=() node_pid=() node_up=()
start_node() {
  local i=$1
  start_member "$cluster-n$i" "${node_port[$i]}" "n$i" "${node_url[$i]}" "b$$$cluster"
  node_pid[$i]=$STARTED
  node_up[$i]=1
}
# new_cluster NAME N: a fresh database and N instances n0..n(N-1) on free ports, not started.
new_cluster() {
  cluster=$1
  node_port=() node_url=() node_pid=() node_up=()
  fresh_db
  local i
  for i in $(seq 0 $(($2 - 1))); do
    node_port[$i]=$(free_port)
    node_url[$i]="http://127.0.0.1:${node_port[$i]}"
  done
}
log_of() { echo "$work/$cluster-$1.log"; }

# wait_node I: until n<I>'s /readyz answers 200 (two minutes at most).
wait_node() { wait_ready "${node_pid[$1]}" "${node_url[$1]}" "$cluster-n$1"; }

# stop_cluster PIPELINE: the pipeline deleted (no shutdown checkpoint, no partition moving
# while the instances go), then every instance up stopped.
stop_cluster() {
  local i code
  for i in "${!node_up[@]}"; do
    [ -n "${node_up[$i]}" ] || continue
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 120 -X DELETE "${node_url[$i]}/v1/pipelines/$1" || true)
    [ "$code" = 204 ] || stop_notes+="DELETE $1 answered $code. "
    break
  done
  for i in "${!node_up[@]}"; do
    [ -n "${node_up[$i]}" ] || continue
    stop "${node_pid[$i]}" "$cluster-n$i"
    node_up[$i]=""
  done
}

up_urls() {
  local i
  for i in "${!node_up[@]}"; do [ -z "${node_up[$i]}" ] || echo "${node_url[$i]}"; done
}
# settle PIPELINE: every partition owned by a live instance and caught up (lag 0); prints the
# pipeline's entry of /v1/cluster.
settle() {
  local first
  first=$(up_urls | head -n 1)
  # shellcheck disable=SC2046
  bench settle "$1" "$first" 300 $(up_urls) || fail "$1 did not settle (owners, lag 0) within 300 s"
}

load_stall_polls=30 # load_until fails once 30 polls (a minute) read the same count

# ---------------------------------------------------------------------------------------------
declare -a mem_rows=()
baseline_rss=""
for n in $mem_instances; do
  name="mem$n"
  say "1. memory, $n instance(s): $name with $partitions partitions, --users $users until $mem_keys session keys"
  new_cluster "m$n" "$n"
  for i in $(seq 0 $((n - 1))); do start_node "$i"; done
  for i in $(seq 0 $((n - 1))); do wait_node "$i"; done
  declare -a rss0=()
  for i in $(seq 0 $((n - 1))); do
    read -r rss0[$i] _ _ _ < <(bench metrics "${node_url[$i]}" "$name" "${node_pid[$i]}")
    echo "n$i at start (empty): RSS $(mib "${rss0[$i]}") MiB"
  done
  [ -n "$baseline_rss" ] || baseline_rss=${rss0[0]}
  load_until "$name" "$users" "$mem_keys" "$work/$name-load.txt" "${node_url[0]}" \
    "$(IFS=,; echo "${node_url[*]}")" --partitions "$partitions"
  stop_load
  settle "$name" >/dev/null
  total=$(status "${node_url[0]}" "$name" | jq -r '.keys.sessions')
  events=$(status "${node_url[0]}" "$name" | jq -r '.events')
  sum=0 max=0 per="" keys_per="" keysum=0
  for i in $(seq 0 $((n - 1))); do
    read -r rss keys lag owned < <(bench metrics "${node_url[$i]}" "$name" "${node_pid[$i]}")
    vm=$(awk '/^VmRSS:/ {print $2 * 1024}' "/proc/${node_pid[$i]}/status")
    echo "n$i: RSS $(mib "$rss") MiB (VmRSS $(mib "$vm") MiB, at start $(mib "${rss0[$i]}") MiB), session keys $keys, partitions $owned, lag $lag"
    sum=$((sum + rss))
    [ "$rss" -le "$max" ] || max=$rss
    per+="$(mib "$rss")/"
    keys_per+="$keys/"
    keysum=$((keysum + keys))
  done
  echo "status.keys.sessions $total, events $events; sum of the instances' session keys $keysum"
  mem_rows+=("$n ${per%/} $(mib "$sum") $(mib "$max") ${keys_per%/} $total $events $LOAD_SECONDS")
  stop_cluster "$name"
done

# ---------------------------------------------------------------------------------------------
name="move"
say "2. moves: $name with $move_partitions partitions on 2 instances, --users $users until $move_keys session keys"
new_cluster mv 3
start_node 0
start_node 1
wait_node 0
wait_node 1
node_up[2]=""
load_until "$name" "$users" "$move_keys" "$work/$name-load.txt" "${node_url[0]}" \
  "${node_url[0]},${node_url[1]}" --partitions "$move_partitions"
move_load_seconds=$LOAD_SECONDS
# The generator is paused (SIGSTOP) while the checkpoint is written, so that the events after
# it are a measured few (it continues in event time on SIGCONT, nothing late).
kill -STOP "$LOAD_PID"
manual_checkpoint "${node_url[0]}" "$name"
kill -CONT "$LOAD_PID"
await_after_events "${node_url[0]}" "$name"
stop_load
before=$(status "${node_url[0]}" "$name")
after_events=$(($(echo "$before" | jq .wal_offset) - checkpoint_offset))
echo "loaded: $(echo "$before" | jq -c '{events, wal_offset, sessions: .keys.sessions}'); $after_events events after the checkpoint"
entry=$(settle "$name")
echo "owners: $(echo "$entry" | jq -c '[.partitions[] | {id, owner}]'), leader $(echo "$entry" | jq -r .leader)"
probes=$(bench probes "${node_url[0]}" "$name")
echo "probe keys (a key with state per partition): $probes"
logs_json() {
  local i
  for i in 0 1 2; do printf '{"n%s": "%s"}\n' "$i" "$(log_of "n$i")"; done | jq -cs add
}
# url_json I…: {"nI": url, …}
url_json() {
  local i
  for i in "$@"; do printf '{"n%s": "%s"}\n' "$i" "${node_url[$i]}"; done | jq -cs add
}
declare -a planned_rows=() crash_rows=()
# move_row FILE: "ms-to-first-200 from->to lease_taken started lag0 slowest codes" of the (first)
# moved partition, ms after the give-up (planned) or the kill (crash).
move_row() {
  jq -r '
    def ms(t; b): if t == null or b == null then "-" else ((t - b) * 1000 | round | tostring) end;
    [.partitions[] | select(.t_giveup != null and .owner != "" and .owner != .initial_owner)]
    | if length == 0 then "- none - - - - -" else
        (map("\(.id):\(.initial_owner)->\(.owner)") | join(",")) as $moves
        | .[0] as $p
        | "\(ms($p.t_first_200; $p.t_giveup)) \($moves) \(ms($p.t_lease_taken; $p.t_giveup)) \(ms($p.t_started; $p.t_giveup)) \(ms($p.t_lag0; $p.t_giveup)) \($p.slowest_ms) \($p.codes | to_entries | map("\(.key)x\(.value)") | join(",") | if . == "" then "-" else . end)"
      end' "$1"
}
leader_idx() { echo "$entry" | jq -r '.leader' | sed 's/^n//'; }

# watch CONFIG: the watcher started on CONFIG (JSON; "ready_file" and "out" added here), its
# PID in $WATCH_PID once it has its baseline (every poll answered once).
watch() {
  rm -f "$work/ready" "$work/killed"
  jq --arg ready "$work/ready" --arg killed "$work/killed" '. + {ready_file: $ready, killed_file: $killed}' \
    <<<"$1" >"$work/$2.json"
  bench watch "$work/$2.json" >"$work/$2.txt" 2>&1 &
  WATCH_PID=$!
  started "$WATCH_PID" "watcher $2"
  local i
  for i in $(seq 1 800); do
    [ -e "$work/ready" ] && return 0
    kill -0 "$WATCH_PID" 2>/dev/null || { cat "$work/$2.txt"; fail "the watcher $2 exited before it was ready"; }
    sleep 0.05
  done
  fail "the watcher $2 was not ready within 40 s"
}
# watched NAME: waits for the watcher's end and shows what it saw.
watched() {
  wait "$WATCH_PID" || { cat "$work/$1.txt"; fail "the watcher $1 failed"; }
  unset "running[$WATCH_PID]"
  cat "$work/$1.txt"
}
interval=$(python3 -c "print($poll_ms / 1000)")
all_parts=$(echo "$probes" | jq -c 'keys | map(tonumber)')

joining=2
for r in $(seq 1 "$runs"); do
  # Planned: instance n$joining (re)started while the leader and it are polled.
  leader=$(leader_idx)
  [[ "$leader" =~ ^[012]$ ]] || fail "$name has no leader among n0..n2 ($leader)"
  say "2.$r planned: n$joining started (leader n$leader); a key of each partition asked every $poll_ms ms at n$leader and n$joining"
  watch "{\"mode\": \"planned\", \"pipeline\": \"$name\", \"interval\": $interval, \"probes\": $probes,
    \"partitions\": $all_parts, \"cluster_url\": \"${node_url[$leader]}\",
    \"query_urls\": $(url_json "$leader" "$joining"), \"giveup_nodes\": [\"n$leader\"],
    \"logs\": $(logs_json), \"out\": \"$work/planned$r.json\", \"timeout\": 180, \"settle\": 2}" "watch-p$r"
  start_node "$joining"
  wait_node "$joining"
  watched "watch-p$r"
  planned_rows+=("planned $r n$joining+ $(move_row "$work/planned$r.json")")
  entry=$(settle "$name")
  echo "owners: $(echo "$entry" | jq -c '[.partitions[] | {id, owner}]'), leader $(echo "$entry" | jq -r .leader)"

  # Crash: kill -9 of an owner that is not the leader, its partition's key asked at both others.
  leader=$(leader_idx)
  victim=$(echo "$entry" | jq -r --arg l "n$leader" --argjson r "$r" \
    '[.partitions[] | select(.owner != $l) | .owner] | unique | .[($r - 1) % length] // empty' | sed 's/^n//')
  [[ "$victim" =~ ^[012]$ ]] || fail "no owner of $name besides the leader n$leader"
  victim_parts=$(echo "$entry" | jq -c --arg v "n$victim" '[.partitions[] | select(.owner == $v) | .id]')
  others=()
  for i in 0 1 2; do [ "$i" = "$victim" ] || others+=("$i"); done
  say "2.$r crash: kill -9 of n$victim (partitions $victim_parts; leader n$leader); its key asked every $poll_ms ms at n${others[0]} and n${others[1]}"
  watch "{\"mode\": \"crash\", \"pipeline\": \"$name\", \"interval\": $interval, \"probes\": $probes,
    \"partitions\": $victim_parts, \"cluster_url\": \"${node_url[${others[0]}]}\",
    \"query_urls\": $(url_json "${others[@]}"), \"logs\": $(logs_json),
    \"out\": \"$work/crash$r.json\", \"timeout\": 180, \"settle\": 1}" "watch-c$r"
  echo "$EPOCHREALTIME" >"$work/killed.tmp"
  mv "$work/killed.tmp" "$work/killed"
  kill -9 "${node_pid[$victim]}"
  reap "${node_pid[$victim]}"
  node_up[$victim]=""
  watched "watch-c$r"
  crash_rows+=("crash $r n$victim-9 $(move_row "$work/crash$r.json")")
  entry=$(settle "$name")
  echo "owners: $(echo "$entry" | jq -c '[.partitions[] | {id, owner}]'), leader $(echo "$entry" | jq -r .leader)"
  joining=$victim
done
# The killed instance back (not measured), for the queries on three instances.
start_node "$joining"
wait_node "$joining"
sleep 2
entry=$(settle "$name")
echo "owners: $(echo "$entry" | jq -c '[.partitions[] | {id, owner}]'), leader $(echo "$entry" | jq -r .leader)"
after=$(status "${node_url[0]}" "$name")
echo "after the moves: $(echo "$after" | jq -c '{events, wal_offset, sessions: .keys.sessions}')"
move_sessions_before=$(echo "$before" | jq .keys.sessions)
move_sessions_after=$(echo "$after" | jq .keys.sessions)

# ---------------------------------------------------------------------------------------------
leader=$(leader_idx)
asked=$(((leader + 1) % 3))
say "3. $queries state queries at n$asked (not the leader n$leader), sequential, one keep-alive connection, keys u0..u$((query_keyspace - 1))"
bench queries "${node_url[$asked]}" "$name" "$queries" "$query_keyspace" 14 "$work/queries.json" \
  | tee "$work/queries.txt"
stop_cluster "$name"
stop_nats
machine_after

say "summary (one run, this machine: $cores cores, $date_started; lease timeout $lease_timeout)"
if [ "${#mem_rows[@]}" -gt 0 ]; then
  echo "1. state memory, $partitions partitions, loaded to >= $mem_keys session keys (--users $users), every lag 0; RSS in MiB"
  echo "   an instance at start (empty): $(mib "$baseline_rss") MiB"
  printf '   %-3s %-16s %6s %6s %8s %8s %9s %-22s %10s %8s %9s %6s\n' n "RSS per instance" sum max "max/n=1" "mean/n=1" "state/n=1" "session keys per inst." "keys total" "B/key" events load_s
  base_max=""
  empty=$(mib "$baseline_rss")
  for row in "${mem_rows[@]}"; do
    read -r n per sum max keys total events secs <<<"$row"
    [ -n "$base_max" ] || base_max=$max
    printf '   %-3s %-16s %6s %6s %8s %8s %9s %-22s %10s %8s %9s %6s\n' "$n" "$per" "$sum" "$max" \
      "$(python3 -c "print(f'{$max / $base_max:.2f}')")" "$(python3 -c "print(f'{$sum / $n / $base_max:.2f}')")" \
      "$(python3 -c "print(f'{($max - $empty) / ($base_max - $empty):.2f}')")" "$keys" "$total" \
      "$(python3 -c "print(f'{($sum - $n * $empty) * 1048576 / $total:.0f}')")" "$events" "$secs"
  done
  echo "   max/n=1, mean/n=1: an instance's RSS (the largest, the mean) over the one instance's of n=1;"
  echo "   state/n=1: the same for the largest instance's RSS minus an empty instance's (the state);"
  echo "   B/key: the instances' RSS above empty, summed, per session key (all six operators' state)"
fi
echo "2. moves, $move_partitions partitions on 2-3 instances, $move_sessions_before session keys (after: $move_sessions_after); checkpoint ${checkpoint_seconds}s, $after_events events after it; poll every $poll_ms ms"
printf '   %-8s %-3s %-9s %9s %-14s %7s %8s %7s %8s  %s\n' move run instance first_200 "part:from->to" lease started lag_0 slowest "answers before the first 200"
for row in "${planned_rows[@]}" "${crash_rows[@]}"; do
  read -r kind r inst ms moves lease started lag0 slowest codes <<<"$row"
  printf '   %-8s %-3s %-9s %9s %-14s %7s %8s %7s %8s  %s\n' "$kind" "$r" "$inst" "$ms" "$moves" "$lease" "$started" "$lag0" "$slowest" "$codes"
done
echo "   ms after the give-up (planned: the first 503 at the leader or its /v1/cluster showing another owner) or"
echo "   the kill (crash: lease timeout $lease_timeout + recovery): first 200 for a key of the partition at any instance"
echo "   polled, the new owner's log lines \"partition lease taken\" and \"partition started\", its /metrics lag 0"
echo "   (read every 100 ms); slowest: the longest answer to a request sent before the first 200"
q=$work/queries.json
echo "3. state queries at $(jq -r .node "$q") (one client, one keep-alive connection, sequential; owners unchanged: $(jq -r .stable "$q"))"
printf '   %-10s %6s %8s %8s %8s  %s\n' kind count p50_ms p99_ms max_ms answers
for kind in local forwarded; do
  printf '   %-10s %6s %8.2f %8.2f %8.2f  %s\n' "$kind" "$(jq -r ".$kind.count" "$q")" "$(jq -r ".$kind.p50" "$q")" \
    "$(jq -r ".$kind.p99" "$q")" "$(jq -r ".$kind.max" "$q")" "$(jq -c ".$kind.codes" "$q")"
done
echo "   forwarded/local: p50 $(jq -r '.forwarded.p50 / .local.p50 * 100 | round / 100' "$q")x, p99 $(jq -r '.forwarded.p99 / .local.p99 * 100 | round / 100' "$q")x"
[ -z "$stop_notes" ] || echo "notes: $stop_notes"
echo "cores: $cores; date: $date_started to $(date -u '+%H:%M:%S UTC'); eddy built from $tree"
print_load
